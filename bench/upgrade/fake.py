"""Simulated agents for the upgrade benchmark: every operation takes exactly ``step_time`` seconds.

One httpx.MockTransport answers for every node (``http://<node>.agent``). State is what the
orchestrator judges by: version (the installer sets it), IIS/Tomcat, the Replication Engine on the
first node, the CRM schema version and 20 records. Results have the shapes of the sandbox driver.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx

SCRIPTS = [{"name": s, "success": True} for s in ("CustomPages.es", "views.es", "Tables.es")]
RECORDS = {str(i): hashlib.sha256(str(i).encode()).hexdigest() for i in range(1, 21)}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat()


class SimulatedCluster:
    def __init__(self, n: int, *, step_time: float) -> None:
        self.names = [f"web{i:03d}" for i in range(1, n + 1)]
        self.step_time = step_time
        self.version = dict.fromkeys(self.names, "7.3")
        self.web = dict.fromkeys(self.names, "running")
        self.schema_version = "7.3"
        self.ops: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.polls: dict[str, int] = {}

    def roles(self, name: str) -> list[str]:
        return ["database", "replication_engine", "email_manager"] if name == self.names[0] else []

    def transport_for(self, _url: str) -> httpx.AsyncBaseTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        node = request.url.host.split(".", 1)[0]
        path = request.url.path
        if path == "/v1/status":
            return httpx.Response(200, json=self.status(node))
        if path == "/v1/operations":
            body = json.loads(request.content)
            op = self.ops.get(body["op_id"])
            if op is None:
                now = time.time()
                op = self.ops[body["op_id"]] = {
                    "op_id": body["op_id"],
                    "action": body["action"],
                    "node": node,
                    "params": body.get("params") or {},
                    "created": now,
                    "done": now + self.step_time,
                    "state": "running",
                    "result": None,
                }
            return httpx.Response(202, json=self.record(op))
        op_id = path.removeprefix("/v1/operations/").split("/")[0]
        self.polls[op_id] = self.polls.get(op_id, 0) + 1
        op = self.ops.get(op_id)
        if op is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": op_id}})
        return httpx.Response(200, json=self.record(op))

    def status(self, node: str) -> dict[str, Any]:
        return {
            "name": node,
            "install_name": "CRM",
            "version": self.version[node],
            "roles": self.roles(node),
            "web": self.web[node],
            "tomcat": self.web[node],
            "services": {"email_manager": "running"} if node == self.names[0] else {},
            "replication_engine": node == self.names[0],
            "library_reachable": True,
            "free_disk_bytes": 100 << 30,
            "driver": "simulated",
        }

    def record(self, op: dict[str, Any]) -> dict[str, Any]:
        if op["state"] == "running" and time.time() >= op["done"]:
            op["result"] = self.perform(op)
            op["state"] = "succeeded"
        finished = op["state"] != "running"
        return {
            "op_id": op["op_id"],
            "action": op["action"],
            "state": op["state"],
            "created_at": _iso(op["created"]),
            "started_at": _iso(op["created"]),
            "finished_at": _iso(op["done"]) if finished else None,
            "result": op["result"],
        }

    def perform(self, op: dict[str, Any]) -> dict[str, Any]:
        """Results that fit the typed models (``node_agent.protocol``), as the sandbox answers."""
        a, node, p = op["action"], op["node"], op["params"]
        if a.startswith("backup_"):
            return {
                "path": f"{a}/{op['op_id']}",
                "bytes": 1 << 20,
                "sha256": "0" * 64,
                "verified": True,
                "finished_at": _iso(time.time()) + "Z",
            }
        if a == "run_installer":
            self.version[node] = p["version"]
            self.web[node] = "stopped"  # the wizard stops IIS
            if node == self.names[0]:
                self.schema_version = p["version"]
            return {"mode": p["mode"], "version": p["version"], "registered": bool(p.get("register"))}
        if a == "read_upgrade_log":
            return {
                "ok": True,
                "completed": True,
                "scripts": SCRIPTS,
                "failed_scripts": [],
                "must_fix": [],
                "to_version": self.version[node],
            }
        if a == "fingerprint_records":
            return {"records": RECORDS, "schema": self.schema_version, "schema_version": self.schema_version}
        if a == "database_sessions":
            # Every server's IIS holds a connection while it runs (the upgrade's own is left out).
            hosts = {n: 1 for n in self.names if self.web[n] == "running"}
            programs = {n: {"eware.dll": 1} for n in hosts}
            return {"hosts": hosts, "programs": programs, "total": sum(hosts.values())}
        if a == "check_license":
            return {"valid": True, "checked": "format only", "key_hash": "sha256:" + "0" * 64}
        if a == "probe_library":
            return {"reachable": True, "writable": True, "path": "\\\\files\\crm\\library"}
        if a == "list_dta_objects":
            return {"objects": [], "count": 0}
        if a == "check_database_rights":
            rights = ("view_server_state", "backup_database", "alter_database", "create_any_database")
            return {
                "login": "crmsql",
                **dict.fromkeys(rights, True),
                "sysadmin": False,
                "missing": [],
                "ok": True,
            }
        if a == "check_prerequisites":
            return {
                "role_services": {"Web-ASP": True, "Web-ISAPI-Ext": True, "Web-ISAPI-Filter": True},
                "parent_paths": True,
                "crm_site": "Default Web Site",
                "sites": ["Default Web Site"],
                "memory_bytes": 16 << 30,
                "free_disk_bytes": 50 << 30,
            }
        if a in ("stop_web", "start_web"):
            self.web[node] = "running" if a == "start_web" else "stopped"
            return {"web": self.web[node]}
        if a in ("stop_tomcat", "start_tomcat"):
            return {"service": "CRMTomcat7", "state": "running" if a == "start_tomcat" else "stopped"}
        if a in ("stop_service", "start_service"):
            return {"service": p["service"], "state": "running" if a == "start_service" else "stopped"}
        if a == "reload_metadata":
            return {"reloaded_at": _iso(time.time()) + "Z"}
        if a == "warmup_logon":
            return {"logged_on": True, "status": 200, "sid": "1", "logged_off": 1}
        if a == "remove_replication_engine":
            return {"replication_engine": False, "removed": False}
        if a in ("disable_triggers", "enable_triggers"):
            return {"triggers": "enabled" if a == "enable_triggers" else "disabled"}
        return {}
