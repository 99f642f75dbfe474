"""A service run by :func:`crmcluster.services.serve` that reports the runtime it got.

python -m tests.cli.runtime_probe PORT
"""

from __future__ import annotations

import asyncio
import gc
import sys

from fastapi import FastAPI

from crmcluster.services import serve

app = FastAPI()


@app.get("/runtime")
async def runtime() -> dict[str, object]:
    return {
        "loop": type(asyncio.get_running_loop()).__module__,
        "httptools": "uvicorn.protocols.http.httptools_impl" in sys.modules,
        "frozen": gc.get_freeze_count(),
        "threshold": list(gc.get_threshold()),
    }


if __name__ == "__main__":
    serve(app, host="127.0.0.1", port=int(sys.argv[1]))
