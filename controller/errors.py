"""The controller's domain errors, mapped to the JSON error shape in one place (:data:`API_ERRORS`).

    ControllerError
    ├── UnknownNode          404  no node of that name is registered
    ├── UnknownJob           404  no job of that id
    ├── InvalidChange        422  the request breaks a rule of a multi-server cluster
    ├── ClusterBusy          409  the change clashes with the current state (another job, a role held)
    ├── StepFailed           409  an agent operation of a job failed; ``job`` names the step
    └── AgentsUnavailable    503  an agent the change needs did not answer; retry later

Agent errors (:mod:`controller.agents.client`) are translated where a route calls an agent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from config.api_errors import ApiError, Conflict, InvalidInput, NotFound, Unavailable


class ControllerError(Exception):
    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UnknownNode(ControllerError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no node named {name!r} is registered", details={"node": name})


class UnknownJob(ControllerError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}", details={"job": job_id})


class InvalidChange(ControllerError):
    pass


class ClusterBusy(ControllerError):
    pass


class StepFailed(ControllerError):
    """A job stopped at a step; ``details`` holds the job record (which step, what the agent said)."""


class AgentsUnavailable(ControllerError):
    pass


def _map(cls: type[ApiError], code: str) -> Callable[[Exception], ApiError]:
    def mapper(exc: Exception) -> ApiError:
        assert isinstance(exc, ControllerError)
        return cls(exc.message, details=exc.details, code=code)

    return mapper


API_ERRORS: Mapping[type[Exception], Callable[[Exception], ApiError]] = {
    UnknownNode: _map(NotFound, "unknown_node"),
    UnknownJob: _map(NotFound, "unknown_job"),
    InvalidChange: _map(InvalidInput, "invalid"),
    ClusterBusy: _map(Conflict, "conflict"),
    StepFailed: _map(Conflict, "step_failed"),
    AgentsUnavailable: _map(Unavailable, "agent_unavailable"),
}
