"""``crmcluster demo``: a whole multi-server Sage CRM cluster on this machine (DESIGN.md "Operator
contract").

It brings up, on loopback and the embedded SQLite database under ``--data-dir``:

- the controller (port 8700) and the login balancer (port 8080);
- ``--nodes N`` (default 3) sandbox web servers, each a node agent (answering HAProxy's
  agent-check too) plus its stand-in CRM web server, installed as a Sage CRM 7.3 cluster:
  ``crm1`` the database server with the Replication Engine and the Email Manager, ``crm2`` the
  Indexer, ``crm3`` the Escalation service (the guide's example); further nodes are plain web
  servers;

seeds ``Custom_SysParams`` (ServerNames, FQServerNames = the stand-in web servers' host:port,
DTLSServerName, DocStore/DocTemplates) and the demo users, registers the nodes with the controller,
logs a few users on through the balancer (so they spread over the servers), and once every node is
``up`` writes ``DIR/demo.json`` atomically for scripts. It restarts a service that dies, and stops
everything on Ctrl-C or SIGTERM.

Tokens and the Fernet secret key are made once per data dir (``DIR/demo-secrets.json``, mode 0600)
and reused by a restart. ``--ports auto`` takes free ports; ``--fault NODE:ACTION[:KIND]`` makes
that sandbox action fail (or hang, crash …) on that node every time, to see a restore.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from cryptography.fernet import Fernet

from config.vocabulary import Role
from crmcluster.demo_data import DEMO_USERS, company_count, prepare_database
from crmcluster.demo_processes import ServiceFailed, ServiceSpec, Supervisor
from crmcluster.services import PortInUse, check_port_free
from node_agent.protocol import Action

INSTALL_NAME = "CRM"
VERSION = "7.3"
#: What ``--from-version`` may start the demo at: the versions the sandbox installs (the install
#: wizard upgrades from 7.2 or 7.3 to 2017 R1).
SANDBOX_VERSIONS = ("7.2", "7.3")
CONTROLLER_PORT, BALANCER_PORT, AGENT_PORT_BASE, WEB_PORT_BASE = 8700, 8080, 8700, 8800
#: HAProxy's agent-check port of node i is AGENT_CHECK_PORT_BASE + i (deploy/haproxy/agent-check.cfg).
AGENT_CHECK_PORT_BASE = 8900
FAULT_KINDS = ("fail", "hang", "crash", "log_error", "nb", "invalid")
LOGGED_ON_USERS = 5
STARTUP_TIMEOUT = 90.0


class DemoError(Exception):
    """Something the person running the demo must fix; one line."""


@dataclass
class NodePlan:
    name: str
    roles: list[str]
    agent_port: int
    web_port: int
    agent_check_port: int
    faults: list[str] = field(default_factory=list)


@dataclass
class DemoPlan:
    host: str
    data_dir: Path
    controller_port: int
    balancer_port: int
    nodes: list[NodePlan]
    admin_token: str
    secret_key: str
    #: The Sage CRM version every sandbox server is installed at (``--from-version``).
    version: str = VERSION
    #: Each node's own agent token, issued by the controller when the demo registers the node.
    node_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def crm_db_url(self) -> str:
        """The stand-in for Sage CRM's database (Custom_SysParams, Activity, Users, Company …)."""
        return f"sqlite+aiosqlite:///{self.data_dir / 'crm.db'}"

    @property
    def state_db_url(self) -> str:
        """crmcluster's own tables, apart from the CRM database: a restore of the CRM database
        must not roll back the controller's record of the upgrade that is restoring it."""
        return f"sqlite+aiosqlite:///{self.data_dir / 'state.db'}"

    @property
    def controller_url(self) -> str:
        return f"http://{self.host}:{self.controller_port}"

    @property
    def balancer_url(self) -> str:
        return f"http://{self.host}:{self.balancer_port}"

    def agent_url(self, node: NodePlan) -> str:
        return f"http://{self.host}:{node.agent_port}"

    def web_url(self, node: NodePlan) -> str:
        return f"http://{self.host}:{node.web_port}"


# Planning ------------------------------------------------------------------------------------------
def node_roles(count: int) -> dict[str, list[str]]:
    """The guide's example placement: database + Replication Engine + Email Manager on server 1,
    Indexer on 2, Escalation on 3 (folded onto the last server when there are fewer)."""
    names = [f"crm{i}" for i in range(1, count + 1)]
    roles: dict[str, list[str]] = {n: [] for n in names}
    roles[names[0]] += [Role.DATABASE.value, Role.REPLICATION_ENGINE.value, Role.EMAIL_MANAGER.value]
    roles[names[min(1, count - 1)]].append(Role.INDEXER.value)
    roles[names[min(2, count - 1)]].append(Role.ESCALATION.value)
    return roles


def parse_faults(specs: list[str], names: list[str]) -> dict[str, list[str]]:
    """``["crm2:run_installer", "crm1:backup_database:hang"]`` → ``{"crm2": ["run_installer:fail"], …}``."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise DemoError(
                f"--fault {spec!r}: write NODE:ACTION or NODE:ACTION:KIND (e.g. crm2:run_installer)"
            )
        node, action = parts[0], parts[1]
        kind = parts[2] if len(parts) == 3 else "fail"
        if node not in names:
            raise DemoError(f"--fault {spec!r}: no node {node!r} (nodes: {', '.join(names)})")
        try:
            Action(action)
        except ValueError:
            raise DemoError(f"--fault {spec!r}: unknown action {action!r}") from None
        if kind.partition("*")[0] not in FAULT_KINDS:
            raise DemoError(f"--fault {spec!r}: unknown kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
        out.setdefault(node, []).append(f"{action}:{kind}")
    return out


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``host`` right now (bound to port 0, then released)."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def load_secrets(data_dir: Path) -> dict[str, str]:
    """The demo's tokens and secret key, made on first use and kept (mode 0600) for restarts."""
    path = data_dir / "demo-secrets.json"
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if all(isinstance(data.get(k), str) for k in ("admin_token", "secret_key")):
                return {k: data[k] for k in ("admin_token", "secret_key")}
        except (OSError, ValueError):
            pass
        raise DemoError(f"{path} is unreadable; delete it to make new tokens")
    data = {
        "admin_token": "adm-" + secrets.token_urlsafe(24),
        "secret_key": Fernet.generate_key().decode(),
    }
    write_atomically(path, data, mode=0o600)
    return data


def write_atomically(path: Path, data: dict[str, Any], *, mode: int = 0o600) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over: readers never see half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def make_plan(
    *,
    nodes: int,
    data_dir: Path,
    ports: str,
    faults: list[str],
    host: str,
    controller_port: int | None,
    balancer_port: int | None,
    version: str = VERSION,
) -> DemoPlan:
    if version not in SANDBOX_VERSIONS:
        raise DemoError(
            f"--from-version {version}: the sandbox installs Sage CRM {' or '.join(SANDBOX_VERSIONS)}"
        )
    if not 1 <= nodes <= 20:
        raise DemoError(f"--nodes {nodes}: the demo runs 1 to 20 web servers")
    if ports not in ("fixed", "auto"):
        raise DemoError(f"--ports {ports!r}: use 'fixed' (the default ports) or 'auto' (free ports)")
    roles = node_roles(nodes)
    names = list(roles)
    fault_map = parse_faults(faults, names)
    if ports == "auto":
        picked = free_ports(host, 2 + 3 * nodes)
        c_port, b_port = picked[0], picked[1]
        agent_ports, web_ports = picked[2 : 2 + nodes], picked[2 + nodes : 2 + 2 * nodes]
        check_ports = picked[2 + 2 * nodes :]
    else:
        c_port, b_port = CONTROLLER_PORT, BALANCER_PORT
        agent_ports = [AGENT_PORT_BASE + i for i in range(1, nodes + 1)]
        web_ports = [WEB_PORT_BASE + i for i in range(1, nodes + 1)]
        check_ports = [AGENT_CHECK_PORT_BASE + i for i in range(1, nodes + 1)]
    c_port = controller_port or c_port
    b_port = balancer_port or b_port
    data_dir.mkdir(parents=True, exist_ok=True)
    sec = load_secrets(data_dir)
    plan = DemoPlan(
        host=host,
        data_dir=data_dir,
        controller_port=c_port,
        balancer_port=b_port,
        nodes=[
            NodePlan(
                name=n,
                roles=roles[n],
                agent_port=a,
                web_port=w,
                agent_check_port=c,
                faults=fault_map.get(n, []),
            )
            for n, a, w, c in zip(names, agent_ports, web_ports, check_ports, strict=True)
        ],
        admin_token=sec["admin_token"],
        secret_key=sec["secret_key"],
        version=version,
    )
    all_ports = [("controller", c_port), ("balancer", b_port)]
    all_ports += [(f"{n.name} agent", n.agent_port) for n in plan.nodes]
    all_ports += [(f"{n.name} web server", n.web_port) for n in plan.nodes]
    all_ports += [(f"{n.name} agent-check", n.agent_check_port) for n in plan.nodes]
    seen: dict[int, str] = {}
    for what, port in all_ports:
        if port in seen:
            raise DemoError(f"port {port} is given to both {seen[port]} and {what}")
        seen[port] = what
        try:
            check_port_free(host, port)
        except PortInUse:
            raise DemoError(
                f"port {port} on {host} ({what}) is already in use; stop what holds it, or use --ports auto"
            ) from None
    return plan


# The services ---------------------------------------------------------------------------------------
#: Settings of the person's environment the demo's services keep (how they log).
PASSED_THROUGH = ("CRMCLUSTER_LOG_FORMAT", "CRMCLUSTER_LOG_LEVEL")


def _base_env(plan: DemoPlan) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_") or k in PASSED_THROUGH}
    env.update(
        {
            "CRMCLUSTER_DATA_DIR": str(plan.data_dir),
            "CRMCLUSTER_STATE_DB_URL": plan.state_db_url,
            "CRMCLUSTER_CRM_DB_URL": plan.crm_db_url,
            "CRMCLUSTER_INSTALL_NAME": INSTALL_NAME,
            "CRMCLUSTER_SECRET_KEY": plan.secret_key,
            # The demo speaks plain HTTP (on loopback by default; elsewhere each service warns).
            "CRMCLUSTER_ALLOW_PLAIN_HTTP": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def service_specs(plan: DemoPlan) -> list[ServiceSpec]:
    """The controller and the balancer; each agent follows (:func:`agent_spec`) once registered."""
    py = [sys.executable, "-m", "crmcluster"]
    logs = plan.data_dir / "logs"
    base = _base_env(plan)
    specs = [
        ServiceSpec(
            name="controller",
            argv=[*py, "controller", "--host", plan.host, "--port", str(plan.controller_port)],
            env=base
            | {
                "CRMCLUSTER_ADMIN_TOKEN": plan.admin_token,
                "CRMCLUSTER_BALANCER_URL": plan.balancer_url,
                "CRMCLUSTER_HEARTBEAT_TIMEOUT": "10",
                "CRMCLUSTER_DRAIN_TIMEOUT": "300",
            },
            log_path=logs / "controller.log",
            health_url=f"{plan.controller_url}/healthz",
            cwd=plan.data_dir,
        ),
        ServiceSpec(
            name="balancer",
            argv=[*py, "balancer", "--host", plan.host, "--port", str(plan.balancer_port)],
            # A short slow start: servers that have just come up are at full weight within seconds.
            env=base | {"CRMCLUSTER_ADMIN_TOKEN": plan.admin_token, "CRMCLUSTER_SLOW_START": "3"},
            log_path=logs / "balancer.log",
            health_url=f"{plan.balancer_url}/healthz",
            cwd=plan.data_dir,
        ),
    ]
    return specs


def agent_spec(plan: DemoPlan, node: NodePlan) -> ServiceSpec:
    """The node's agent, started once the controller has issued the node's own token."""
    py = [sys.executable, "-m", "crmcluster"]
    logs = plan.data_dir / "logs"
    base = _base_env(plan)
    token = plan.node_tokens[node.name]
    return ServiceSpec(
        name=node.name,
        argv=[
            *py,
            "agent",
            "--name",
            node.name,
            "--driver",
            "sandbox",
            "--data-dir",
            str(plan.data_dir / "nodes" / node.name),
            "--host",
            plan.host,
            "--port",
            str(node.agent_port),
        ],
        env=base
        | {
            "CRMCLUSTER_AGENT_TOKEN": token,
            "CRMCLUSTER_CONTROLLER_URL": plan.controller_url,
            "CRMCLUSTER_AGENT_URL": plan.agent_url(node),
            "CRMCLUSTER_HEARTBEAT_INTERVAL": "2",
            "CRMCLUSTER_SANDBOX_VERSION": plan.version,
            "CRMCLUSTER_SANDBOX_ROLES": ",".join(node.roles),
            "CRMCLUSTER_SANDBOX_WEB_PORT": str(node.web_port),
            "CRMCLUSTER_AGENT_CHECK_PORT": str(node.agent_check_port),
            "CRMCLUSTER_AGENT_CHECK_HOST": plan.host,
            "CRMCLUSTER_SANDBOX_LIBRARY_ROOT": str(plan.data_dir / "library"),
            "CRMCLUSTER_SANDBOX_FAULTS": ",".join(node.faults),
        },
        log_path=logs / f"{node.name}.log",
        health_url=f"{plan.agent_url(node)}/v1/status",
        health_headers={"Authorization": f"Bearer {token}"},
        cwd=plan.data_dir,
    )


# Talking to the cluster -----------------------------------------------------------------------------
async def register_nodes(plan: DemoPlan, client: httpx.AsyncClient) -> None:
    """Register every node; keep each one's agent token in ``plan.node_tokens`` (a node the state
    database already knows, from an earlier run, gets a new token: the old one was not kept)."""
    for node in plan.nodes:
        resp = await client.post(
            f"{plan.controller_url}/api/v1/nodes",
            json={
                "name": node.name,
                "agent_url": plan.agent_url(node),
                "fqdn": f"{plan.host}:{node.web_port}",
                "roles": node.roles,
                "join": False,
            },
        )
        if resp.status_code not in (200, 201):
            raise DemoError(f"registering {node.name} failed: {resp.status_code} {resp.text[:200]}")
        token = resp.json().get("agent_token")
        if token is None:
            rotated = await client.post(f"{plan.controller_url}/api/v1/nodes/{node.name}/token")
            if rotated.status_code != 200:
                raise DemoError(f"a token for {node.name} failed: {rotated.status_code} {rotated.text[:200]}")
            token = rotated.json()["agent_token"]
        plan.node_tokens[node.name] = str(token)


async def wait_all_up(plan: DemoPlan, client: httpx.AsyncClient, *, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    states: dict[str, str] = {}
    while True:
        resp = await client.get(f"{plan.controller_url}/api/v1/cluster")
        if resp.status_code == 200:
            cluster = resp.json()
            states = {n["name"]: n["state"] for n in cluster["nodes"]}
            if all(states.get(n.name) == "up" for n in plan.nodes):
                return dict(cluster)
        if loop.time() > deadline:
            raise DemoError(f"nodes not up after {timeout:.0f}s: {states}")
        await asyncio.sleep(0.5)


async def wait_balancer_sees_all(plan: DemoPlan, headers: dict[str, str], *, timeout: float) -> None:
    """Wait until the balancer has every server up and out of slow start (so logons spread)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=5.0, headers=headers) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                resp = await client.get(f"{plan.balancer_url}/api/v1/servers")
                seen = {s["name"]: (s["state"], s["weight"]) for s in resp.json()["servers"]}
                if all(seen.get(n.name, ("?", 0))[0] == "up" for n in plan.nodes) and all(
                    w >= 0.999 for _, w in seen.values()
                ):
                    return
            if loop.time() > deadline:
                raise DemoError(f"the balancer does not see every server up after {timeout:.0f}s")
            await asyncio.sleep(0.5)


async def log_users_on(plan: DemoPlan, *, count: int, timeout: float = 30.0) -> dict[str, str]:
    """Log ``count`` demo users on through the balancer (it spreads them); user → server."""
    url = f"{plan.balancer_url}/{INSTALL_NAME.lower()}/eware.dll/Logon"
    placed: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        for user in DEMO_USERS[:count]:
            while True:
                try:
                    # Sage CRM's logon form (EWARE_USERID, PASSWORD), re-sent to the 307's Location.
                    form = {"EWARE_USERID": user, "PASSWORD": ""}
                    first = await client.post(url, data=form)
                    if first.status_code == 307:
                        server = first.headers.get("x-crm-server", "?")
                        final = await client.post(first.headers["location"], data=form)
                        if final.status_code < 400:
                            placed[user] = server
                            break
                except httpx.HTTPError:
                    pass
                if loop.time() > deadline:
                    raise DemoError(f"could not log {user} on through the balancer within {timeout:.0f}s")
                await asyncio.sleep(0.5)
    return placed


def demo_document(plan: DemoPlan, pids: dict[str, int]) -> dict[str, Any]:
    return {
        "controller_url": plan.controller_url,
        "balancer_url": plan.balancer_url,
        "dashboard_url": f"{plan.controller_url}/?token={plan.admin_token}",
        "admin_token": plan.admin_token,
        "install_name": INSTALL_NAME,
        "version": plan.version,
        "nodes": [
            {
                "name": n.name,
                "agent_url": plan.agent_url(n),
                "web_url": plan.web_url(n),
                "agent_check_port": n.agent_check_port,
                "roles": n.roles,
                "agent_token": plan.node_tokens.get(n.name),
            }
            for n in plan.nodes
        ],
        "data_dir": str(plan.data_dir),
        "pids": {"demo": os.getpid(), **pids},
    }


def _say(message: str) -> None:
    typer.echo(f"crmcluster demo: {message}", err=True)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def banner(plan: DemoPlan, placed: dict[str, str]) -> str:
    w = max(len(n.name) for n in plan.nodes) + 2
    lines = [
        f"Sage CRM {plan.version} demo cluster is up ({_count(len(plan.nodes), 'web server')}, "
        f"data in {plan.data_dir})",
        "",
        f"  {'controller':<12}{plan.controller_url}/api/v1   (OpenAPI: {plan.controller_url}/docs)",
        f"  {'dashboard':<12}{plan.controller_url}/   (signed-in link: dashboard_url in demo.json)",
        f"  {'balancer':<12}{plan.balancer_url}/{INSTALL_NAME.lower()}/   (end users log on here)",
    ]
    for n in plan.nodes:
        lines.append(
            f"  {n.name:<{w}}agent {plan.agent_url(n)}   web {plan.web_url(n)}   "
            f"{', '.join(n.roles) or 'web server'}"
            + (f"   faults: {', '.join(n.faults)}" if n.faults else "")
        )
    by_server: dict[str, list[str]] = {}
    for user, server in placed.items():
        by_server.setdefault(server, []).append(user)
    if placed:
        lines.append("")
        lines.append(
            "  logged on: " + "; ".join(f"{s}: {', '.join(us)}" for s, us in sorted(by_server.items()))
        )
    lines += [
        "",
        f"  tokens and URLs for scripts: {plan.data_dir / 'demo.json'}",
        f"  service logs: {plan.data_dir / 'logs'}/",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


# Running --------------------------------------------------------------------------------------------
async def run_demo(plan: DemoPlan) -> int:
    demo_json = plan.data_dir / "demo.json"
    demo_json.unlink(missing_ok=True)
    (plan.data_dir / "library").mkdir(exist_ok=True)  # the folder standing for the UNC share
    await prepare_database(
        crm_url=plan.crm_db_url,
        state_url=plan.state_db_url,
        server_names=[n.name for n in plan.nodes],
        fq_server_names=[f"{plan.host}:{n.web_port}" for n in plan.nodes],
        dtls_server_name=plan.nodes[0].name,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if sys.platform == "win32":  # pragma: no cover - no add_signal_handler on Windows' loop
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        else:
            loop.add_signal_handler(sig, stop.set)

    ready = False

    def rewrite(_name: str) -> None:
        if ready:
            write_atomically(demo_json, demo_document(plan, sup.pids()))

    sup = Supervisor(service_specs(plan), say=_say, on_restart=rewrite)
    headers = {"Authorization": f"Bearer {plan.admin_token}"}
    try:
        sup.start_all()
        nodes = _count(len(plan.nodes), "node")
        _say(f"starting controller, balancer and {nodes} (logs in {plan.data_dir / 'logs'})")
        startup = asyncio.ensure_future(_start(plan, sup, headers))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if startup not in done:
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await startup
            _say("stopped before the cluster was up")
            return 130
        stopper.cancel()
        placed = startup.result()
        write_atomically(demo_json, demo_document(plan, sup.pids()))
        ready = True
        typer.echo(banner(plan, placed))
        await sup.watch(stop)
        _say("stopping")
        return 0
    finally:
        sup.stop_all()
        demo_json.unlink(missing_ok=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            if sys.platform != "win32":
                loop.remove_signal_handler(sig)


async def _start(plan: DemoPlan, sup: Supervisor, headers: dict[str, str]) -> dict[str, str]:
    await sup.wait_healthy(["controller"], timeout=STARTUP_TIMEOUT)
    async with httpx.AsyncClient(timeout=10.0, headers=headers) as client:
        await register_nodes(plan, client)
        for node in plan.nodes:  # each agent starts with its own token
            sup.add(agent_spec(plan, node))
        await sup.wait_healthy([n.name for n in plan.nodes], timeout=STARTUP_TIMEOUT)
        await wait_all_up(plan, client, timeout=STARTUP_TIMEOUT)
    await sup.wait_healthy(["balancer"], timeout=STARTUP_TIMEOUT)
    await wait_balancer_sees_all(plan, headers, timeout=STARTUP_TIMEOUT)
    if await company_count(plan.crm_db_url) == 0:
        _say("warning: the database server seeded no companies")
    return await log_users_on(plan, count=min(LOGGED_ON_USERS, len(DEMO_USERS)))


def demo(
    nodes: Annotated[int, typer.Option("--nodes", help="Number of sandbox web servers (1 to 20).")] = 3,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the demo keeps its database, sandboxes and logs.")
    ] = Path("crmcluster-data"),
    ports: Annotated[
        str,
        typer.Option(
            "--ports",
            help="'fixed': controller 8700, balancer 8080, agents 8701…, web servers 8801…; "
            "'auto': free ports.",
        ),
    ] = "fixed",
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="NODE:ACTION[:KIND]: make that sandbox action fail (or hang, crash …) on that node; "
            "repeatable.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Loopback address to listen on.")] = "127.0.0.1",
    controller_port: Annotated[int | None, typer.Option(help="Controller port (overrides --ports).")] = None,
    balancer_port: Annotated[int | None, typer.Option(help="Balancer port (overrides --ports).")] = None,
    from_version: Annotated[
        str, typer.Option("--from-version", help="Sage CRM version the servers start at: 7.2 or 7.3.")
    ] = VERSION,
) -> None:
    """Run a whole demo cluster here: controller, balancer and N sandbox Sage CRM web servers."""
    try:
        plan = make_plan(
            nodes=nodes,
            data_dir=data_dir.resolve(),
            ports=ports,
            faults=fault or [],
            host=host,
            controller_port=controller_port,
            balancer_port=balancer_port,
            version=from_version,
        )
        code = asyncio.run(run_demo(plan))
    except (DemoError, ServiceFailed) as exc:
        typer.echo(f"crmcluster: {exc}", err=True)
        raise SystemExit(2) from None
    # SystemExit, not typer.Exit: the exit code must reach the shell whatever the CLI's mode.
    raise SystemExit(code)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
