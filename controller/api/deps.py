"""FastAPI dependencies as ``Annotated`` aliases: the shared context and the token checks."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Request

from config.api_errors import Unauthorized, check_bearer
from controller.context import ControllerContext
from controller.dashboard.session import cookie_actor

Actor = Literal["admin", "operator"]


def get_context(request: Request) -> ControllerContext:
    ctx: ControllerContext = request.app.state.ctx
    return ctx


def require_admin(request: Request) -> Actor:
    ctx = get_context(request)
    if check_bearer(request, ctx.settings.admin_token.get_secret_value()) is None:
        raise Unauthorized("admin token required: send Authorization: Bearer <CRMCLUSTER_ADMIN_TOKEN>")
    return "admin"


def require_operator(request: Request) -> Actor:
    """Admin or operator token (the dashboard's drain/undrain and pause/resume)."""
    ctx = get_context(request)
    admin = ctx.settings.admin_token.get_secret_value()
    operator = ctx.settings.operator_token.get_secret_value() if ctx.settings.operator_token else None
    matched = check_bearer(request, admin, operator)
    if matched is None:
        # The dashboard's own buttons: its signed session cookie (with the CSRF header) counts too.
        actor = cookie_actor(request)
        if actor is None:
            raise Unauthorized("admin or operator token required")
        return actor
    return "admin" if matched == admin else "operator"


def require_agent(request: Request) -> None:
    ctx = get_context(request)
    if check_bearer(request, ctx.settings.agent_token.get_secret_value()) is None:
        raise Unauthorized("agent token required")


Context = Annotated[ControllerContext, Depends(get_context)]
AdminActor = Annotated[Actor, Depends(require_admin)]
OperatorActor = Annotated[Actor, Depends(require_operator)]
AgentAuth = Annotated[None, Depends(require_agent)]
