"""FastAPI dependencies as ``Annotated`` aliases: the shared context and who may call a route.

The request was authenticated before its body was read (:mod:`controller.access.authn`); its
principal is ``request.state.principal``. The aliases here authorise it: a principal whose role
does not cover the route's gets 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from config.api_errors import Forbidden, Unauthorized, Unavailable
from controller.access.principal import Principal, Role
from controller.context import ControllerContext


def get_context(request: Request) -> ControllerContext:
    ctx: ControllerContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise Unavailable("the controller is starting")
    return ctx


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise Unauthorized("a valid bearer token is required (Authorization: Bearer <token>)")
    return principal


def authorize(request: Request, role: Role) -> Principal:
    """The request's principal once its role covers ``role``: else 401 (none) or 403."""
    principal = principal_of(request)
    if not principal.may(role):
        raise Forbidden(
            f"{principal.name} may not do this: it needs the {role.value} role",
            details={"needs": role.value, "role": principal.role.value if principal.role else None},
        )
    return principal


def _require(role: Role) -> object:
    def dependency(request: Request) -> str:
        return authorize(request, role).name

    dependency.needed_role = role  # type: ignore[attr-defined]  # read by the route-role test
    return Depends(dependency)


def require_agent(request: Request) -> Principal:
    """An agent's own token, for the node named in the path: another node's token is 403."""
    principal = principal_of(request)
    if principal.kind != "agent" or principal.node is None:
        raise Forbidden("only a node's own agent token may speak for it")
    name = request.path_params.get("name")
    if name is not None and str(name).lower() != principal.node.lower():
        raise Forbidden(
            f"this token belongs to {principal.node}, not {name}",
            details={"token_node": principal.node, "node": name},
        )
    return principal


Context = Annotated[ControllerContext, Depends(get_context)]
#: The principal's name (what the audit trail records) once its role covers the route's.
ViewerActor = Annotated[str, _require(Role.VIEWER)]
OperatorActor = Annotated[str, _require(Role.OPERATOR)]
AdminActor = Annotated[str, _require(Role.ADMIN)]
AgentAuth = Annotated[Principal, Depends(require_agent)]
