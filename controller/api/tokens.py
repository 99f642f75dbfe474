"""API tokens with roles: ``POST/GET /api/v1/tokens``, ``DELETE /api/v1/tokens/{name}`` (admin).

A token is shown once, in the answer of ``POST``; the state database keeps its hash only
(:mod:`config.api_tokens`), and ``GET`` lists names, roles and dates — never a token. Revoking
deletes the token and the dashboard sessions opened with it: both stop working at once on this
controller, within a few seconds on another one sharing the database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.api_errors import API_ERROR_RESPONSES, Conflict, NotFound
from config.api_tokens import NAME_PATTERN, TokenExists, UnknownToken, check_name
from config.roles import Role
from controller.api.deps import AdminActor, Context

router = APIRouter(prefix="/api/v1", tags=["tokens"], responses=API_ERROR_RESPONSES)

TokenName = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TokenName
    role: Role

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)


class TokenOut(BaseModel):
    name: str
    role: Role
    created_at: str
    created_by: str | None
    last_used_at: str | None


class NewTokenOut(TokenOut):
    #: The token itself: shown this once, never again.
    token: str


class TokenList(BaseModel):
    tokens: list[TokenOut]


@router.post("/tokens", status_code=201, response_model=NewTokenOut)
async def create_token(body: TokenRequest, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Make an API token of a role; the answer holds the token, shown this once."""
    details = {"name": body.name, "role": body.role.value}
    async with ctx.audit.change(actor, "tokens.create", target=body.name, details=details) as entry:
        try:
            record, token = await ctx.api_tokens.create(body.name, body.role, created_by=actor)
        except TokenExists as exc:
            raise Conflict(str(exc), details={"name": body.name}) from None
        entry.message = f"{body.role.value} token created"
    return record.public() | {"token": token}


@router.get("/tokens", response_model=TokenList)
async def list_tokens(ctx: Context, _actor: AdminActor) -> dict[str, Any]:
    """The API tokens: name, role, who made it, when it was last used. Never a token."""
    return {"tokens": [t.public() for t in await ctx.api_tokens.list()]}


@router.delete("/tokens/{name}", response_model=TokenOut)
async def revoke_token(
    name: Annotated[str, Path(min_length=1, max_length=63, pattern=NAME_PATTERN)],
    ctx: Context,
    actor: AdminActor,
) -> dict[str, Any]:
    """Revoke a token now (and end the dashboard sessions opened with it)."""
    async with ctx.audit.change(actor, "tokens.revoke", target=name) as entry:
        try:
            record = await ctx.api_tokens.revoke(name)
        except UnknownToken as exc:
            raise NotFound(str(exc), details={"name": name}, code="unknown_token") from None
        entry.message = f"{record.role.value} token revoked"
    return record.public()
