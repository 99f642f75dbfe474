"""The guide's prerequisites per server: the audit (``GET /api/v1/cluster/audit``, ``crmcluster
audit``) and the preflight's ``prerequisites`` finding, on sandbox servers made to lack some; the
windows driver's real read-only commands for them, in its dry run and its read-only mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from config.settings import AgentSettings
from controller.cluster_ops.prerequisites import case_insensitive, judge
from node_agent.app import create_app
from node_agent.drivers.windows import WindowsDriver
from node_agent.protocol import PrerequisitesResult
from tests.agent.test_windows_driver import Agent, settings
from tests.cli.fake_controller import FakeController, invoke
from tests.upgrade.sandbox import sandbox_cluster

LACKING = {
    "crm1": {"sandbox_lacks": "tcp_ip,collation", "sandbox_other_sites": "Intranet"},
    "crm2": {"sandbox_lacks": "asp,memory"},
}


def _checks(answer: dict[str, Any], node: str) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in answer["parts"]["prerequisites"]["nodes"][node]["checks"]}


async def test_the_audit_names_what_each_sandbox_server_lacks(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        agent_settings=LACKING,
    ) as h:
        r = await h.client.get("/api/v1/cluster/audit")
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["status"] == "fail"

        crm1, crm2, crm3 = (_checks(answer, n) for n in ("crm1", "crm2", "crm3"))
        # crm1, the database server: TCP/IP off, a case-sensitive collation, another website.
        assert crm1["sql_tcp_ip"]["status"] == "fail" and crm1["sql_tcp_ip"]["value"] is False
        assert "sys.dm_server_registry" in crm1["sql_tcp_ip"]["command"]
        assert (
            crm1["collation"]["status"] == "fail" and "Latin1_General_CS_AS" in crm1["collation"]["message"]
        )
        assert "SERVERPROPERTY('Collation')" in crm1["collation"]["command"]
        assert crm1["other_sites"]["status"] == "warn" and crm1["other_sites"]["value"] == ["Intranet"]
        assert "appcmd list site" in crm1["other_sites"]["command"]
        assert crm1["database_memory"]["status"] == "pass"
        assert crm1["iis_role_services"]["status"] == "pass"
        # crm2: no ASP (so no parent paths either), 4 GB.
        assert crm2["iis_role_services"]["status"] == "fail"
        assert crm2["iis_role_services"]["message"] == "IIS lacks the role service ASP"
        assert "dism" in crm2["iis_role_services"]["command"]
        assert crm2["asp_parent_paths"]["status"] == "fail"
        assert crm2["memory"]["status"] == "warn" and "4.0 GB" in crm2["memory"]["message"]
        # The database checks are the database server's only.
        assert "sql_tcp_ip" not in crm2 and "collation" not in crm2
        # crm3 has everything the guide asks for.
        assert {c["status"] for c in crm3.values()} == {"pass"}, crm3
        assert answer["parts"]["prerequisites"]["nodes"]["crm3"]["status"] == "pass"
        # The flat list: failures first, every one with the command that read it.
        rows = answer["findings"]
        assert [(f["node"], f["check"]) for f in rows if f["status"] == "fail"] == [
            ("crm1", "collation"),
            ("crm1", "sql_tcp_ip"),
            ("crm2", "asp_parent_paths"),
            ("crm2", "iis_role_services"),
        ]
        assert all(f["command"] for f in rows)

        # The preflight carries the same, blocking.
        run = await h.plan()
        finding = next(f for f in run["preflight"] if f["name"] == "prerequisites")
        assert finding["status"] == "fail" and "prerequisites" in run["blocking"]
        assert "crm2: IIS lacks the role service ASP" in finding["message"]
        assert finding["evidence"]["crm1"]["status"] == "fail"

    # crmcluster audit prints each failing check with its command, exits 1; --json as the API.
    fake = FakeController({("GET", "/api/v1/cluster/audit"): answer})
    result = invoke(fake, "audit")
    assert result.exit_code == 1, result.stderr
    for words in ("IIS lacks the role service ASP", "Latin1_General_CS_AS", "Intranet", "dism"):
        assert words in result.stdout
    assert "crm3" not in result.stdout  # nothing to show for it without --all
    assert "crm3" in invoke(fake, "audit", "--all").stdout
    assert invoke(fake, "audit", "--json").stdout.count('"check"') > 10


async def test_a_clean_cluster_passes_the_prerequisites(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url, crm_db_url=crm_db_url, tokens=tokens, secret_key=secret_key, tmp_path=tmp_path
    ) as h:
        answer = (await h.client.get("/api/v1/cluster/audit")).json()
        assert answer["status"] == "pass" and answer["findings"] == [], answer["findings"]
        run = await h.plan()
        finding = next(f for f in run["preflight"] if f["name"] == "prerequisites")
        assert finding["status"] == "pass" and "prerequisites" not in run["blocking"]


def test_collations() -> None:
    assert case_insensitive("Latin1_General_CI_AS") and case_insensitive("SQL_Latin1_General_CP1_CI_AS")
    assert case_insensitive("French_CI_AS") and case_insensitive("Modern_Spanish_CI_AS")
    assert not case_insensitive("Latin1_General_CS_AS")
    assert not case_insensitive("Latin1_General_BIN2") and not case_insensitive("Latin1_General_100_BIN")


def test_unread_values_warn_with_the_reason() -> None:
    r = PrerequisitesResult(
        crm_site="Default Web Site",
        database_server=True,
        sources={"role_services": "dism.exe /English /Online /Get-Features /Format:Table"},
        errors={"role_services": "dism.exe exited with 740: Elevated permissions are required"},
    )
    checks = {c.check: c for c in judge(r)}
    assert checks["iis_role_services"].status == "warn"
    assert "Elevated permissions" in checks["iis_role_services"].message
    assert checks["iis_role_services"].command == "dism.exe /English /Online /Get-Features /Format:Table"
    assert {c.status for c in checks.values()} == {"warn"}


async def test_the_windows_driver_reads_them_with_real_commands(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    app = create_app(settings(tmp_path, tokens["agent"]), background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://crm1.agent",
            headers={"Authorization": f"Bearer {tokens['agent']}"},
        ) as client:
            agent = Agent(client, app.state.driver, app)
            agent.model.features["IIS-ISAPIFilter"] = "Disabled"
            agent.model.parent_paths = False
            agent.model.sites.append("Intranet")
            agent.model.tcp_enabled = 0
            res = await agent.ok("p1", "check_prerequisites")
    assert res["commands"][:4] == [
        r"C:\Windows\System32\dism.exe /English /Online /Get-Features /Format:Table",
        r'C:\Windows\System32\inetsrv\appcmd.exe list config "Default Web Site/CRM" '
        "/section:system.webServer/asp /text:enableParentPaths",
        r"C:\Windows\System32\inetsrv\appcmd.exe list site /text:name",
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -NoProfile -NonInteractive -Command "
        '"(Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory"',
    ]
    assert any("sys.dm_server_registry" in c and "SuperSocketNetLib" in c for c in res["commands"])
    assert res["role_services"] == {"Web-ASP": True, "Web-ISAPI-Ext": True, "Web-ISAPI-Filter": False}
    assert res["parent_paths"] is False and res["sites"] == ["Default Web Site", "Intranet"]
    assert res["sql_tcp_enabled"] is False and res["server_collation"] == "Latin1_General_CI_AS"
    assert res["memory_bytes"] == 16 << 30 and res["errors"] == {}
    checks = {c.check: c.status for c in judge(PrerequisitesResult.model_validate(res))}
    assert checks == {
        "iis_role_services": "fail",
        "asp_parent_paths": "fail",
        "other_sites": "warn",
        "sql_tcp_ip": "fail",
        "collation": "pass",
        "database_memory": "pass",
        "memory": "pass",
        "free_disk": "pass",
    }


async def test_the_read_only_mode_runs_every_one_of_them(tmp_path: Path, tokens: dict[str, str]) -> None:
    from node_agent.drivers.windows import tsql
    from node_agent.runner import CommandResult, RecordingRunner

    s: AgentSettings = settings(tmp_path, tokens["agent"]).model_copy(
        update={"dry_run": False, "read_only": True, "windows_programs_root": str(tmp_path)}
    )
    runner = RecordingRunner(
        {
            "dism": CommandResult(0, "Feature Name | State\n---- | ----\nIIS-ASP | Enabled\n"),
            "appcmd": CommandResult(0, "true\n"),
            "powershell": CommandResult(0, "8589934592\n"),
        }
    )
    sql = tsql.RecordingSql(answers={"tcp_enabled": [(1,)], "collation": [("French_CI_AS", "French_CI_AS")]})
    driver = WindowsDriver(s, runner=runner, sql=sql, poll=0)
    app = create_app(s, driver=driver, runner=runner, background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://a",
            headers={"Authorization": f"Bearer {tokens['agent']}"},
        ) as client:
            res = await Agent(client, driver, app).ok("p1", "check_prerequisites")
    assert not any("not run" in c for c in res["commands"])
    assert [RecordingRunner.program(c) for c in runner.calls] == ["dism", "appcmd", "appcmd", "powershell"]
    assert res["role_services"] == {"Web-ASP": True, "Web-ISAPI-Ext": False, "Web-ISAPI-Filter": False}
    assert res["memory_bytes"] == 8 << 30 and res["server_collation"] == "French_CI_AS"
    # SQL Server answered no row for its memory: unread, said why, not guessed.
    assert "VIEW SERVER STATE" in res["errors"]["sql_memory"] and "sql_memory_bytes" not in res
