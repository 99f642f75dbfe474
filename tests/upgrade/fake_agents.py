"""A small fake of a Sage CRM cluster's agents (and their web servers) behind one httpx.MockTransport.

Each node keeps just enough state for the upgrade to be judged for real: version, IIS/Tomcat/service
states, the Replication Engine war, and — on the database server — the CRM schema version and 50
company records. Backups are snapshots; restores put them back. Every ``POST /v1/operations`` is
counted per op id, so a test can prove no operation was sent twice. Faults per (node, action):
``fail``, ``hang`` (never finishes), ``interrupt`` (reads ``interrupted``), ``log_error`` (the
upgrade log lists a failed script and an "NB must be fixed" line), ``invalid`` (license).

Cancels, as a real agent answers them: ``refuse_cancels`` makes that many cancel requests answer
503 (the agent busy, a proxy failing); ``cancel_takes`` seconds pass between an accepted cancel
and the record reading ``cancelled`` (the agent joins the cancelled work's threads meanwhile, the
record reads ``running``). Each operation keeps when it was sent and when it ended (monotonic).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from node_agent.protocol import parse_result, result_for_wire

SCRIPTS = ["CustomPages.es", "views.es", "Tables.es", "Update_indexes_mssql.sql"]


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


@dataclass
class FakeNode:
    name: str
    roles: list[str]
    version: str = "7.3"
    web: str = "running"
    tomcat: str = "running"
    services: dict[str, str] = field(default_factory=dict)
    replication_engine: bool = False
    registry: str = "v7.3"
    site: str = "CRM"
    free_disk: int = 50 << 30
    reachable: bool = True

    @property
    def agent_url(self) -> str:
        return f"http://{self.name}.agent"

    @property
    def web_url(self) -> str:
        return f"http://{self.name}.web"


@dataclass
class Op:
    op_id: str
    action: str
    node: str
    params: dict[str, Any]
    created: float
    finish_at: float | None
    state: str = "running"
    result: dict[str, Any] | None = None
    error: str | None = None
    log: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=_now)
    finished_at: str | None = None
    cancel_at: float | None = None
    ended: float | None = None


class FakeCluster:
    def __init__(
        self,
        names: list[str] | None = None,
        *,
        versions: dict[str, str] | None = None,
        step_time: float = 0.0,
        durations: dict[str, float] | None = None,
    ) -> None:
        names = names or ["crm1", "crm2", "crm3"]
        self.nodes: dict[str, FakeNode] = {}
        for i, n in enumerate(names):
            roles = ["database", "replication_engine", "email_manager"] if i == 0 else []
            services = {"email_manager": "running"} if i == 0 else {}
            if i == 1:
                roles, services = ["indexer"], {"indexer": "running"}
            self.nodes[n] = FakeNode(
                n, roles, version=(versions or {}).get(n, "7.3"), services=services, replication_engine=i == 0
            )
        self.db_node = names[0]
        self.schema_version = "7.3"
        self.records = {str(i): hashlib.sha256(f"company {i}".encode()).hexdigest() for i in range(1, 51)}
        self.triggers = True
        self.registrations = 0
        self.backups: dict[str, Any] = {}
        self.ops: dict[str, Op] = {}
        self.sent: dict[str, int] = {}
        self.faults: dict[tuple[str, str], str] = {}
        self.step_time = step_time
        self.durations = durations or {}
        self.installer_log: list[tuple[str, float, float]] = []  # (node, started, finished)
        self._seq = itertools.count(1)
        self.refuse_cancels = 0
        self.cancel_takes = 0.0
        self.cancel_requests: list[tuple[str, int]] = []  # (op id, status answered)

    # Observations ----------------------------------------------------------------------------------
    @property
    def schema(self) -> str:
        return hashlib.sha256(f"schema {self.schema_version}".encode()).hexdigest()

    def sent_twice(self) -> list[str]:
        return [op for op, n in self.sent.items() if n > 1]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def transport_for(self, _url: str) -> httpx.AsyncBaseTransport:
        return self.transport()

    # HTTP --------------------------------------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        name, _, kind = host.partition(".")
        node = self.nodes.get(name)
        if node is None or not node.reachable:
            raise httpx.ConnectError("unreachable", request=request)
        if kind == "web":
            return self._web(node, request)
        path = request.url.path
        if path == "/v1/status":
            return httpx.Response(200, json=self.status(node))
        if path == "/v1/operations" and request.method == "POST":
            body = json.loads(request.content)
            op_id = body["op_id"]
            self.sent[op_id] = self.sent.get(op_id, 0) + 1
            if op_id not in self.ops:
                self.ops[op_id] = self._start(node, op_id, body["action"], body.get("params") or {})
            return httpx.Response(202, json=self._record(self.ops[op_id]))
        if path.startswith("/v1/operations/"):
            rest = path.removeprefix("/v1/operations/")
            op_id, _, cancel = rest.partition("/")
            op = self.ops.get(op_id)
            if op is None:
                return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such op"}})
            if cancel == "cancel":
                if self.refuse_cancels > 0:
                    self.refuse_cancels -= 1
                    self.cancel_requests.append((op_id, 503))
                    return httpx.Response(503, json={"error": {"code": "unavailable", "message": "busy"}})
                self.cancel_requests.append((op_id, 200))
                if op.state == "running" and op.cancel_at is None:
                    op.cancel_at = time.monotonic() + self.cancel_takes
            self._advance(op)
            return httpx.Response(200, json=self._record(op))
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    def _web(self, node: FakeNode, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/sdata"):
            return httpx.Response(200 if node.tomcat == "running" else 503)
        return httpx.Response(200 if node.web == "running" else 503, text="logon")

    def status(self, node: FakeNode) -> dict[str, Any]:
        return {
            "name": node.name,
            "install_name": "CRM",
            "version": node.version,
            "roles": node.roles,
            "web": node.web,
            "tomcat": node.tomcat,
            "services": node.services,
            "replication_engine": node.replication_engine,
            "library_reachable": True,
            "free_disk_bytes": node.free_disk,
            "web_url": node.web_url,
            "driver": "fake",
        }

    def _record(self, op: Op) -> dict[str, Any]:
        return {
            "op_id": op.op_id,
            "action": op.action,
            "state": op.state,
            "params": {},
            "created_at": op.created_at,
            "finished_at": op.finished_at,
            "result": op.result,
            "error": op.error,
            "log_tail": op.log[-20:],
        }

    # Operations --------------------------------------------------------------------------------------
    def _start(self, node: FakeNode, op_id: str, action: str, params: dict[str, Any]) -> Op:
        now = time.monotonic()
        duration = self.durations.get(action, self.step_time)
        op = Op(op_id, action, node.name, params, now, now + duration)
        fault = self.faults.get((node.name, action))
        if fault == "hang":
            op.finish_at = None
        if action == "run_installer":
            self.installer_log.append((node.name, now, now + duration))
        self._advance(op)
        return op

    def _advance(self, op: Op) -> None:
        if op.state == "running" and op.cancel_at is not None and time.monotonic() >= op.cancel_at:
            op.state, op.error, op.finished_at = "cancelled", "cancelled on request", _now()
            op.ended = time.monotonic()
            return
        if op.state != "running" or op.finish_at is None or time.monotonic() < op.finish_at:
            return
        op.ended = time.monotonic()
        node = self.nodes[op.node]
        fault = self.faults.get((node.name, op.action))
        op.finished_at = _now()
        if fault == "fail":
            op.state, op.error = "failed", f"injected fault: {op.action} fails on {node.name}"
            return
        if fault == "interrupt":
            op.state, op.error = "interrupted", "agent restarted"
            return
        try:
            # Through the protocol's model, as the real agent does: the fake cannot drift from it.
            op.result = result_for_wire(parse_result(op.action, self._perform(node, op)))
            op.state = "succeeded"
        except RuntimeError as exc:
            op.state, op.error = "failed", str(exc)

    def _perform(self, node: FakeNode, op: Op) -> dict[str, Any]:
        a, p = op.action, op.params
        if a in ("stop_web", "start_web"):
            node.web = "stopped" if a == "stop_web" else "running"
            return {"web": node.web}
        elif a in ("stop_tomcat", "start_tomcat"):
            node.tomcat = "stopped" if a == "stop_tomcat" else "running"
            return {"service": "CRMTomcat7", "state": node.tomcat}
        elif a in ("stop_service", "start_service"):
            node.services[p["service"]] = "stopped" if a == "stop_service" else "running"
            return {"service": p["service"], "state": node.services[p["service"]]}
        elif a.startswith("backup_"):
            dest = p.get("destination") or f"backups/{node.name}/{a}-{next(self._seq)}"
            snap: dict[str, Any] = {
                "node": node.name,
                "version": node.version,
                "registry": node.registry,
                "replication_engine": node.replication_engine,
                "schema_version": self.schema_version,
                "records": dict(self.records),
            }
            self.backups[dest] = copy.deepcopy(snap)
            return {
                "path": dest,
                "bytes": 4096,
                "sha256": hashlib.sha256(dest.encode()).hexdigest(),
                "verified": True,
                "finished_at": _now() + "Z",
            }
        elif a.startswith("restore_"):
            restored: dict[str, Any] | None = self.backups.get(p.get("source", ""))
            if restored is None:
                raise RuntimeError(f"no backup {p.get('source')}")
            if a == "restore_database":
                self.schema_version, self.records = restored["schema_version"], dict(restored["records"])
                return {"restored_from": p["source"], "schema_version": self.schema_version}
            elif a == "restore_program_files":
                node.version = restored["version"]
                node.replication_engine = restored["replication_engine"]
                return {"path": "CRM_backup", "website_path": "CRM_backup/WWWRoot", "version": node.version}
            else:
                node.registry = restored["registry"]
                return {"imported": ["Config_CRM.reg", "Mappings_CRM.reg"]}
        elif a == "redirect_website":
            node.site = p.get("path") or "CRM"
            return {"website_path": node.site}
        elif a == "register_dll":
            return {"registered": f"{p.get('path') or 'CRM/WWWRoot'}/eware.dll"}
        elif a == "run_installer":
            if node.web == "running":
                node.web = "stopped"  # the wizard stops IIS
            node.version = p["version"]
            node.registry = f"v{p['version']}"
            if p.get("register"):
                self.registrations += 1
            if node.name == self.db_node:
                self.schema_version = p["version"]
            else:
                node.replication_engine = True  # a fresh war on every upgraded node, as an install does
            op.log += [f"Running {s}" for s in SCRIPTS] + ["Upgrade complete"]
            return {"mode": p["mode"], "version": p["version"], "registered": bool(p.get("register"))}
        elif a == "read_upgrade_log":
            scripts = [{"name": s, "success": True} for s in SCRIPTS]
            must_fix: list[str] = []
            if self.faults.get((node.name, "log_error")):
                scripts[1]["success"] = False
                must_fix = ["views.es: vCompany NB must be fixed"]
            return {
                "ok": not must_fix and all(s["success"] for s in scripts),
                "completed": True,
                "scripts": scripts,
                "failed_scripts": [str(s["name"]) for s in scripts if not s["success"]],
                "must_fix": must_fix,
                "to_version": node.version,
            }
        elif a in ("disable_triggers", "enable_triggers"):
            self.triggers = a == "enable_triggers"
            return {"triggers": "enabled" if self.triggers else "disabled"}
        elif a == "remove_replication_engine":
            removed, node.replication_engine = node.replication_engine, False
            return {"replication_engine": False, "removed": removed}
        elif a == "install_replication_engine":
            installed, node.replication_engine = not node.replication_engine, True
            return {"replication_engine": True, "installed": installed}
        elif a in ("reload_metadata", "warmup_logon"):
            if node.web != "running":
                raise RuntimeError("IIS is stopped")
            if a == "reload_metadata":
                return {"reloaded_at": _now() + "Z"}
            return {"logged_on": True, "status": 200, "sid": "1", "logged_off": 1}
        elif a == "check_license":
            key = p.get("license_key", "")
            valid = len(key) >= 8 and self.faults.get((node.name, "check_license")) != "invalid"
            return {
                "valid": valid,
                "checked": "format only",
                "key_hash": "sha256:" + hashlib.sha256(key.encode()).hexdigest(),
            }
        elif a == "probe_library":
            return {"reachable": True, "writable": True, "path": "\\\\files\\crm\\library"}
        elif a == "fingerprint_records":
            ids = p.get("ids") or sorted(int(k) for k in list(self.records)[:20])
            return {
                "records": {str(i): self.records.get(str(i)) for i in ids},
                "schema": self.schema,
                "schema_version": self.schema_version,
            }
        elif a == "database_sessions":
            sessions = {
                n.name: {"iis": 1 if n.web == "running" else 0, "tomcat": 10 if n.tomcat == "running" else 0}
                for n in self.nodes.values()
            }
            programs = {h: v for h, v in sessions.items() if sum(v.values())}
            hosts = {h: sum(v.values()) for h, v in programs.items()}
            return {"hosts": hosts, "programs": programs, "total": sum(hosts.values())}
        elif a == "list_dta_objects":
            return {"objects": [], "count": 0}
        elif a == "check_prerequisites":
            roles = {"Web-ASP": True, "Web-ISAPI-Ext": True, "Web-ISAPI-Filter": True}
            return {
                "role_services": roles,
                "parent_paths": True,
                "crm_site": "Default Web Site",
                "sites": ["Default Web Site"],
                "memory_bytes": 16 << 30,
                "free_disk_bytes": 50 << 30,
            }
        raise RuntimeError(f"the fake agent cannot {a}")
