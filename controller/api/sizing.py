"""``GET /api/v1/sizing``: the guide's server hardware recommendation (:mod:`config.sizing`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from config.api_errors import API_ERROR_RESPONSES
from config.sizing import advise
from controller.api.deps import ViewerActor
from controller.errors import InvalidChange

router = APIRouter(prefix="/api/v1", tags=["sizing"], responses=API_ERROR_RESPONSES)


@router.get("/sizing")
async def sizing(
    _actor: ViewerActor,
    users: Annotated[int, Query(ge=1, le=1_000_000)],
    db_size: Annotated[float, Query(ge=0, le=1_000_000, description="Database size now, GB")],
    growth: Annotated[float, Query(ge=0, le=1_000_000, description="Growth, GB per year")] = 0.0,
    call_center: bool = False,
) -> dict[str, Any]:
    """The hardware table's row, the machines with their memory and processors, and each rule quoted."""
    try:
        advice = advise(users=users, call_center=call_center, db_size_gb=db_size, growth_gb_per_year=growth)
    except ValueError as exc:
        raise InvalidChange(str(exc)) from exc
    return advice.as_json()
