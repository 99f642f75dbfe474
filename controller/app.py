"""The controller's ASGI app, built once from its settings by :func:`create_app`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
from fastapi import FastAPI

from config.api_errors import install_error_handlers
from config.crm_schema import create_embedded_crm_tables, crm_tables
from config.database import make_engine
from config.migrate import migrate
from config.secrets import SecretBox, register_secret
from config.settings import ControllerSettings
from config.sysparams import SysParamsStore
from controller.agent_client import AgentPool
from controller.context import ControllerContext


def create_app(
    settings: ControllerSettings,
    *,
    agent_transport_for: Callable[[str], httpx.AsyncBaseTransport | None] | None = None,
) -> FastAPI:
    """Build the controller. ``agent_transport_for(url)`` lets tests reach agents in-process."""
    for secret in (settings.admin_token, settings.agent_token, settings.operator_token, settings.secret_key):
        register_secret(secret)
    assert settings.secret_key is not None  # ControllerSettings requires it

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state_engine = make_engine(settings.state_url)
        crm_engine = make_engine(settings.crm_url) if settings.crm_url != settings.state_url else state_engine
        tables = crm_tables(settings.crm_names)
        await migrate(state_engine)
        if crm_engine.dialect.name == "sqlite":
            await create_embedded_crm_tables(crm_engine, tables)
        ctx = ControllerContext(
            settings=settings,
            state_engine=state_engine,
            crm_engine=crm_engine,
            crm_tables=tables,
            sysparams=SysParamsStore(tables, settings.sysparam_row_names()),
            agents=AgentPool(settings.agent_token.get_secret_value(), transport_for=agent_transport_for),
            box=SecretBox(settings.secret_key),  # type: ignore[arg-type]
        )
        app.state.ctx = ctx
        try:
            yield
        finally:
            await ctx.tasks.shutdown(timeout=5)
            await ctx.agents.aclose()
            await state_engine.dispose()
            if crm_engine is not state_engine:
                await crm_engine.dispose()

    app = FastAPI(title="crmcluster controller", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
