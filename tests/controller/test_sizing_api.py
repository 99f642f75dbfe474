"""``GET /api/v1/sizing`` on a real controller app (ASGI transport, the test's database)."""

from __future__ import annotations

from tests.controller.conftest import Harness


async def test_sizing_answers_the_advice(controller: Harness) -> None:
    r = await controller.client.get(
        "/api/v1/sizing", params={"users": 250, "db_size": 10, "growth": 5, "call_center": "true"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["layout"] == "multi_server"
    assert body["row"]["users"] == "Over 200"
    assert [m["memory_gb_min"] for m in body["machines"]] == [16, 9, 8]


async def test_sizing_bad_input_is_422_json(controller: Harness) -> None:
    r = await controller.client.get("/api/v1/sizing", params={"users": 0, "db_size": 1})
    assert r.status_code == 422
    assert set(r.json()["error"]) == {"code", "message", "details"}
    r = await controller.client.get("/api/v1/sizing", params={"users": 5})
    assert r.status_code == 422


async def test_sizing_needs_the_admin_token(controller: Harness) -> None:
    r = await controller.client.get(
        "/api/v1/sizing", params={"users": 5, "db_size": 1}, headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401
