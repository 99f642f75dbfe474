"""Fault injection for the sandbox, per action, from ``CRMCLUSTER_SANDBOX_FAULTS``.

    run_installer:fail,backup_registry:hang,restore_database:crash,check_license:invalid*1

Kinds:

- ``fail``   the action fails (``run_installer`` fails part-way, after it changed the tree and the
  schema, as a real failed upgrade does; other actions fail before changing anything);
- ``hang``   the action never finishes until it is cancelled;
- ``crash``  the agent process dies in the middle of the action (``os._exit``);
- ``log_error`` (``run_installer``) a script fails in the upgrade log, the installer still exits 0;
- ``nb``     (``run_installer``) the upgrade log carries a "NB must be fixed" line;
- ``invalid`` (``check_license``, ``run_installer``) the license key is refused;
- ``response`` (``run_installer``) setup's log reads ``ResultCode=-3`` (the response file lacks
  data), nothing is installed;
- ``no_log`` (``run_installer``) setup writes no new ``upgradelog.html`` (an old one stays).

``*N`` after a kind makes it fire N times only (then the action behaves), e.g. to test a retry;
the sandbox keeps the count in its state, so ``crash*1`` crashes once, not once per restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.errors import SettingError
from node_agent.protocol import Action

KINDS = ("fail", "hang", "crash", "log_error", "nb", "invalid", "response", "no_log")


@dataclass
class Fault:
    kind: str
    remaining: int | None = None  # None: every time


class Faults:
    def __init__(self, spec: str = "") -> None:
        self._faults: dict[tuple[str, str], Fault] = {}
        #: How often each counted fault fired: ``{"action:kind": n}`` (the sandbox persists it).
        self.used: dict[str, int] = {}
        for part in (p.strip() for p in spec.split(",")):
            if part:
                self._add(part)

    def _add(self, part: str) -> None:
        action, _sep, kind = part.partition(":")
        kind = kind.strip() or "fail"
        times: int | None = None
        if "*" in kind:
            kind, _, n = kind.partition("*")
            if not n.isdigit() or int(n) < 1:
                raise SettingError(f"CRMCLUSTER_SANDBOX_FAULTS: bad repeat count in {part!r}")
            times = int(n)
        try:
            Action(action.strip())
        except ValueError:
            raise SettingError(f"CRMCLUSTER_SANDBOX_FAULTS: unknown action {action.strip()!r}") from None
        if kind not in KINDS:
            raise SettingError(
                f"CRMCLUSTER_SANDBOX_FAULTS: unknown fault {kind!r} in {part!r} (one of {', '.join(KINDS)})"
            )
        self._faults[(action.strip(), kind)] = Fault(kind, times)

    def set(self, action: Action | str, kind: str = "fail", *, times: int | None = None) -> None:
        """Add a fault at run time (tests, the demo)."""
        self._add(f"{Action(action).value}:{kind}" + (f"*{times}" if times else ""))

    def clear(self, action: Action | str | None = None) -> None:
        if action is None:
            self._faults.clear()
        else:
            for key in [k for k in self._faults if k[0] == Action(action).value]:
                del self._faults[key]

    def take(self, action: Action, *kinds: str) -> str | None:
        """The first of ``kinds`` set for ``action`` (used up once when it has a count), or None."""
        for kind in kinds:
            fault = self._faults.get((action.value, kind))
            if fault is None:
                continue
            if fault.remaining is not None:
                self.used[f"{action.value}:{kind}"] = self.used.get(f"{action.value}:{kind}", 0) + 1
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[(action.value, kind)]
            return kind
        return None

    def already_used(self, used: dict[str, int]) -> None:
        """Count faults that fired before a restart against their ``*N``."""
        for key, n in used.items():
            action, _, kind = key.partition(":")
            fault = self._faults.get((action, kind))
            self.used[key] = n
            if fault is not None and fault.remaining is not None:
                fault.remaining -= n
                if fault.remaining <= 0:
                    del self._faults[(action, kind)]

    def spec(self) -> str:
        return ",".join(
            f"{a}:{f.kind}" + (f"*{f.remaining}" if f.remaining else "") for (a, _), f in self._faults.items()
        )
