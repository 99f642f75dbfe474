"""``PUT /api/v1/license``: a new license key on every server (the guide's "Updating the license
key"), its differences shown first (:mod:`controller.cluster_ops.license_key`).

    {"license_key": "…", "preview": true}   200: the differences per server; nothing changes
    {"license_key": "…", "preview": false}  202: the differences and the job updating the servers
                                             (200 with ``job: null`` when every server has it)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from config.api_errors import API_ERROR_RESPONSES
from config.input_types import Bool
from config.secrets import register_secret
from controller.api.deps import AdminActor, Context
from controller.cluster_ops import license_key

router = APIRouter(prefix="/api/v1", tags=["license"], responses=API_ERROR_RESPONSES)


class LicenseChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    license_key: Annotated[SecretStr, Field(min_length=8, max_length=200)]
    #: True (the default): show the differences only.
    preview: Bool = True


@router.put("/license")
async def put_license(
    body: LicenseChange, ctx: Context, actor: AdminActor, response: Response
) -> dict[str, Any]:
    """Preview (default) or apply a new license key on every server; the key is never echoed."""
    key = body.license_key.get_secret_value()
    register_secret(key)
    details = {"key_hint": license_key.key_hint(key), "preview": body.preview}
    what = "license.preview" if body.preview else "license.update"
    async with ctx.audit.change(actor, what, target="license", details=details) as entry:
        if body.preview:
            answer = await license_key.preview(ctx, key)
        else:
            answer = await license_key.apply(ctx, key)
            if answer["job"] is not None:
                response.status_code = 202
        entry.message = answer["summary"]
    return answer
