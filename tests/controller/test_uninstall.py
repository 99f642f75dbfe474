"""Removing a server with ``?uninstall=true``: the guide's "Uninstalling Sage CRM manually" run by
real sandbox agents in-process — drained, out of ServerNames, services, Tomcat, eware.dll, the IIS
application, the registry keys and the install folder gone, the shared database untouched."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from config.crm_schema import crm_tables
from tests.controller.conftest import Cluster


async def _add_crm4(cluster: Cluster, *, faults: str = "") -> None:
    await cluster.add_agent("crm4", [], faults=faults)
    c = cluster.client
    cfg = (await c.get("/api/v1/cluster")).json()["sysparams"]
    r = await c.put(
        "/api/v1/cluster/config",
        json={
            "server_names": [*cfg["server_names"], "crm4"],
            "fq_server_names": [*cfg["fq_server_names"], cluster.fqdn("crm4")],
        },
    )
    assert r.status_code == 200, r.text
    r = await c.post("/api/v1/nodes", json={"name": "crm4", "agent_url": "http://crm4.agent", "roles": []})
    assert r.status_code == 201, r.text


async def _database_rows(cluster: Cluster) -> tuple[int, int]:
    tables = crm_tables(cluster.h.ctx.settings.crm_names)
    async with cluster.h.ctx.crm_engine.connect() as conn:
        companies = (await conn.execute(select(func.count()).select_from(tables.company))).scalar_one()
        params = (await conn.execute(select(func.count()).select_from(tables.sysparams))).scalar_one()
    return int(companies), int(params)


async def test_servers_holding_something_once_are_refused_saying_what_to_move(cluster: Cluster) -> None:
    c = cluster.client
    r = await c.delete("/api/v1/nodes/crm1", params={"uninstall": "true"})
    assert r.status_code == 409
    err = r.json()["error"]
    assert "database server" in err["message"] and "Replication Engine" in err["message"]
    assert set(err["details"]["roles"]) >= {"database", "replication_engine", "email_manager"}
    r = await c.delete("/api/v1/nodes/crm2", params={"uninstall": "true"})
    assert r.status_code == 409
    assert "crmcluster services set indexer=OTHER" in r.json()["error"]["message"]
    r = await c.delete("/api/v1/nodes/crm3", params={"uninstall": "true"})
    assert "escalation" in r.json()["error"]["details"]["move_first"]
    # nothing changed on any of them
    for name in ("crm1", "crm2", "crm3"):
        assert (await cluster.status(name)).version == "7.3"
    assert (await c.get("/api/v1/cluster")).json()["sysparams"]["server_names"] == ["crm1", "crm2", "crm3"]


async def test_remove_with_uninstall_leaves_nothing_of_sage_crm_but_the_shared_database(
    cluster: Cluster,
) -> None:
    await _add_crm4(cluster)
    c = cluster.client
    agent = cluster.agents["crm4"]
    driver = agent.driver
    # crm4 runs a service nobody relies on once (Integration) and has its tree, keys and app
    await agent.run("pre-1", "install_service", {"service": "integration"})
    await agent.run("pre-2", "start_service", {"service": "integration"})
    tree_root = driver.tree.root
    assert tree_root.is_dir() and driver.registry.load()
    before = await _database_rows(cluster)
    async with httpx.AsyncClient() as web:
        assert (await web.get(f"{agent.web_url}/crm/eware.dll/Logon")).status_code == 200

    r = await c.delete("/api/v1/nodes/crm4", params={"uninstall": "true", "drain_timeout": 5})
    assert r.status_code == 202, r.text
    job = await cluster.wait_job(r.json()["id"])
    assert job["status"] == "succeeded", job
    assert [s["action"] for s in job["steps"]] == [
        "wait_for_logoffs",
        "remove_from_server_names",
        "remove_crm_services",
        "unregister_dll",
        "delete_iis_application",
        "delete_registry_keys",
        "delete_install_folder",
        "verify_uninstalled",
        "forget_node",
    ]
    results = {s["action"]: s["result"] for s in job["steps"]}
    assert results["remove_crm_services"]["services_removed"] == ["integration"]
    assert results["remove_crm_services"]["tomcat_removed"] is True
    assert results["unregister_dll"]["was_registered"] is True
    assert results["delete_iis_application"]["deleted"] is True
    assert len(results["delete_registry_keys"]["deleted"]) == 2
    assert results["delete_install_folder"]["deleted"] == ["CRM"]

    # gone from the cluster and from CRM Server Names / FQ names
    body = (await c.get("/api/v1/cluster")).json()
    assert [n["name"] for n in body["nodes"]] == ["crm1", "crm2", "crm3"]
    assert body["sysparams"]["server_names"] == ["crm1", "crm2", "crm3"]
    assert cluster.fqdn("crm4") not in body["sysparams"]["fq_server_names"]
    # the server itself: no install folder, no registry keys, no services, no CRM application
    assert not tree_root.exists()
    assert driver.registry.load() == {}
    status = await cluster.status("crm4")
    assert status.version is None
    assert status.tomcat.value == "not_installed"
    assert all(s.value == "not_installed" for s in status.services.values())
    assert driver.state["dll_registered"] is None
    async with httpx.AsyncClient() as web:
        assert (await web.get(f"{agent.web_url}/crm/eware.dll/Logon")).status_code == 404
    # never the shared database: every company and every setting row is still there
    assert await _database_rows(cluster) == before
    assert (await cluster.status("crm1")).version == "7.3"
    # the audit says who removed it and how
    entries = (await c.get("/api/v1/audit")).json()["entries"]
    assert any(e["action"] == "nodes.remove" and e["details"]["uninstall"] is True for e in entries)


async def test_an_uninstall_stopped_part_way_is_finished_by_asking_again(cluster: Cluster) -> None:
    await _add_crm4(cluster, faults="delete_registry_keys:fail*1")
    c = cluster.client
    r = await c.delete("/api/v1/nodes/crm4", params={"uninstall": "true", "drain_timeout": 5})
    job = await cluster.wait_job(r.json()["id"])
    assert job["status"] == "failed"
    assert "delete_registry_keys" in job["message"]
    # still registered, out of rotation and out of ServerNames; its keys still there
    node = (await c.get("/api/v1/nodes/crm4")).json()
    assert node["state"] == "maintenance"
    assert "crm4" not in (await c.get("/api/v1/cluster")).json()["sysparams"]["server_names"]
    assert cluster.agents["crm4"].driver.registry.load()

    r = await c.delete("/api/v1/nodes/crm4", params={"uninstall": "true"})
    assert r.status_code == 202, r.text
    job = await cluster.wait_job(r.json()["id"])
    assert job["status"] == "succeeded", job
    results = {s["action"]: s["result"] for s in job["steps"]}
    assert results["remove_crm_services"]["tomcat_removed"] is False  # done the first time
    assert results["unregister_dll"]["was_registered"] is False
    assert len(results["delete_registry_keys"]["deleted"]) == 2
    assert (await c.get("/api/v1/nodes/crm4")).status_code == 404


async def test_the_sandbox_is_as_strict_as_windows(cluster: Cluster) -> None:
    await _add_crm4(cluster)
    agent = cluster.agents["crm4"]
    # the install folder cannot go while Tomcat still runs from it
    rec = await agent.run("s-1", "delete_install_folder")
    assert rec.state.value == "failed"
    assert "being used by another process" in (rec.error or "")
    assert agent.driver.tree.root.is_dir()
    # regsvr32 /u needs the module to be there
    await agent.run("s-2", "remove_crm_services")
    assert (await agent.run("s-3", "delete_install_folder")).state.value == "succeeded"
    agent.driver.update_state(dll_registered="CRM/WWWRoot/eware.dll")
    rec = await agent.run("s-4", "unregister_dll")
    assert rec.state.value == "failed" and "failed to load" in (rec.error or "")
