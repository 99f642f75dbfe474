"""No open redirect, and every malformed request gets a 4xx (never a 500)."""

from __future__ import annotations

import random
from typing import Any

from tests.balancer.conftest import LOGON

CONFIGURED = ("http://crm1.example.com/", "http://crm2.example.com:8443/", "http://crm3.example.com/")


HOSTILE_HEADERS = [
    {"host": "evil.example.net"},
    {"x-forwarded-host": "evil.example.net", "x-forwarded-proto": "https"},
    {"forwarded": "host=evil.example.net;proto=https", "x-forwarded-for": "1.2.3.4"},
    {"x-original-url": "//evil.example.net/", "x-rewrite-url": "https://evil.example.net"},
]
HOSTILE_QUERIES = [
    "next=https://evil.example.net/",
    "u=@evil.example.net",
    "x=//evil.example.net",
    "a=%0d%0aSet-Cookie:%20x=1",
]


async def test_location_ignores_host_and_forwarded_headers(make_balancer: Any) -> None:
    async with make_balancer() as b:
        for headers in HOSTILE_HEADERS:
            r = await b.client.get(LOGON, headers=headers)
            assert r.status_code == 307, headers
            assert r.headers["location"].startswith(CONFIGURED), headers
            assert "evil" not in r.headers["location"], headers


async def test_query_strings_never_change_the_host(make_balancer: Any) -> None:
    async with make_balancer() as b:
        for query in HOSTILE_QUERIES:
            r = await b.client.get(f"{LOGON}?{query}")
            assert r.status_code == 307, query
            loc = r.headers["location"]
            assert loc.startswith(CONFIGURED), query
            assert loc.split("?", 1)[0].endswith("/crm/eware.dll/Logon"), query
            assert "\r" not in loc and "\n" not in loc


async def test_other_paths_are_json_404s(make_balancer: Any) -> None:
    async with make_balancer() as b:
        for path in ("/crm//eware.dll/Logon", "/crm/eware.dll/Do", "/crm2/", "/"):
            r = await b.client.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "not_found"
            assert "location" not in r.headers


async def test_raw_query_with_control_characters_is_400(make_balancer: Any) -> None:
    async with make_balancer() as b:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        for query in (b"a=1\r\nSet-Cookie: x=1", b"a=\x00", b"a=b c", b"x=" + b"a" * 5000, "ä".encode()):
            sent.clear()
            scope = {
                "type": "http",
                "method": "GET",
                "path": "/crm/eware.dll/Logon",
                "query_string": query,
                "headers": [(b"host", b"balancer.test")],
            }
            await b.app(scope, receive, send)
            assert sent[0]["status"] == 400
            assert all(name != b"location" for name, _ in sent[0]["headers"])


async def test_methods_other_than_get_head_post_are_405(make_balancer: Any) -> None:
    async with make_balancer() as b:
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            r = await b.client.request(method, LOGON)
            assert r.status_code == 405
            assert r.headers["allow"] == "GET, HEAD, POST"
            assert r.json()["error"]["code"] == "method_not_allowed"
        r = await b.client.post("/crm/")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD"  # the logon form is posted to eware.dll/Logon only


async def test_head_routes_without_counting_a_pending_logon(make_balancer: Any) -> None:
    async with make_balancer() as b:
        for _ in range(3):
            r = await b.client.head(LOGON)
            assert r.status_code == 307 and r.headers["x-crm-server"] == "crm1"
        assert [s["pending"] for s in (await b.servers()).values()] == [0, 0, 0]


async def test_oversized_form_is_413(make_balancer: Any) -> None:
    async with make_balancer(max_form_bytes=2048) as b:
        r = await b.client.post(
            LOGON,
            content=b"User_Logon=a&x=" + b"y" * 4096,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "too_large"

        async def chunks() -> Any:
            for _ in range(10):
                yield b"z" * 1000

        r = await b.client.post(
            LOGON, content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 413


FORM = "application/x-www-form-urlencoded"
GARBAGE = [
    (b"User_Logon=" + b"u" * 300, FORM, 400),
    (b"User_Logon=a%00b", FORM, 307),  # no user has such a name: routed, not sticky
    (b"User_Logon=a&User_Logon=b", FORM, 400),
    (b"&".join([b"f=1"] * 500), FORM, 400),
    (b"User_Logon=%ff%fe%zz&&==&%", FORM, 307),
    (b"\xff\xfe\x00\x01garbage", FORM, 307),
    (b'{"User_Logon": "alice"}', "application/json", 307),
    (
        b"--b\r\nContent-Disposition: form-data; name=User_Logon\r\n\r\nalice\r\n--b--",
        "multipart/form-data; boundary=b",
        307,
    ),
    (b"", FORM, 307),
]


async def test_garbage_bodies(make_balancer: Any) -> None:
    async with make_balancer() as b:
        for body, content_type, status in GARBAGE:
            r = await b.client.post(LOGON, content=body, headers={"content-type": content_type})
            assert r.status_code == status, body
            if status >= 400:
                assert set(r.json()["error"]) == {"code", "message", "details"}


async def test_random_bodies_never_500(make_balancer: Any) -> None:
    rng = random.Random(20261128)
    alphabet = b"User_Logon=%&+;\x00\xff abc\r\n"
    async with make_balancer() as b:
        for _ in range(150):
            body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 400)))
            ctype = rng.choice(
                ["application/x-www-form-urlencoded", "text/plain", "", "application/x-www-form-urlencoded;;"]
            )
            r = await b.client.post(LOGON, content=body, headers={"content-type": ctype})
            assert r.status_code in (307, 400, 413), (body, r.status_code)


async def test_bad_content_length_is_400(make_balancer: Any) -> None:
    async with make_balancer() as b:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/crm/eware.dll/Logon",
            "query_string": b"",
            "headers": [(b"content-length", b"-5")],
        }
        await b.app(scope, receive, send)
        assert sent[0]["status"] == 400
