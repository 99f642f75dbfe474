"""No license key or password in any file the agent wrote (journal, state, registry, backups,
upgrade log), after operations that carried them."""

from __future__ import annotations

from pathlib import Path

from node_agent.testing import SandboxAgent

LICENSE = "LICENSE-KEY-7f3a9c1e"
DB_PASSWORD = "Db-Passw0rd-91c2"


async def test_no_secret_in_any_file_the_agent_wrote(db_agent: SandboxAgent, tmp_path: Path) -> None:
    await db_agent.run("lic", "check_license", {"license_key": LICENSE})
    await db_agent.run(
        "up",
        "run_installer",
        {
            "mode": "upgrade",
            "version": "2017 R1",
            "license_key": LICENSE,
            "database": {"server": "sql01", "user": "crm", "password": DB_PASSWORD},
            "backup": True,
            "register": True,
        },
    )
    db_agent.driver.faults.set("check_license", "invalid")
    await db_agent.run("lic2", "check_license", {"license_key": LICENSE + "-2"})
    await db_agent.run("log", "read_upgrade_log")
    records = (await db_agent.client.get("/v1/operations")).text
    assert LICENSE not in records and DB_PASSWORD not in records

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 20
    for path in written:
        data = path.read_bytes()
        for secret in (LICENSE, DB_PASSWORD, db_agent.token):
            assert secret.encode() not in data, f"{secret[:6]}… found in {path.relative_to(tmp_path)}"
    state = (tmp_path / "crm1" / "sandbox" / "state.json").read_text()
    assert "sha256:" in state  # only the key's hash is kept
