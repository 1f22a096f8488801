"""API keys, the body limit, rate limits, request ids and the access log, in this process on
fake engines and a fake clock (the log's 50 ms batches are written when the test moves the
clock, not raced)."""

from __future__ import annotations

from pathlib import Path

import orjson

from modelyard.gateway.auth import hash_key
from tests.gateway.fakes import run, running

SMALL = {"model": "chat", "prompt": "x", "max_tokens": 1}
GUARDED = f"""\
gateway:
  api_key_hashes: ["{hash_key("sk-good")}"]
  max_body_bytes: 2000
  rate_limit: {{requests_per_second: 1, burst: 3}}
"""


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_api_keys_body_limit_and_rate_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path, extra=GUARDED) as system:
            status, _, body = await system.post("/v1/completions", SMALL)
            assert status == 401 and body["error"]["code"] == "invalid_api_key"
            assert system.log_lines == []  # access lines are written in batches
            system.clock.advance(0.05)
            assert len(system.log_lines) == 1
            status, _, _ = await system.post("/v1/completions", SMALL, headers=_bearer("sk-bad"))
            assert status == 401
            big = {**SMALL, "prompt": "x" * 5000}
            status, _, body = await system.post("/v1/completions", big, headers=_bearer("sk-good"))
            assert status == 413 and body["error"]["code"] == "request_too_large"
            codes = [
                (await system.post("/v1/completions", SMALL, headers=_bearer("sk-good")))[0]
                for _ in range(3)
            ]
            assert codes == [200, 200, 429]  # burst 3, one taken by the 413
            status, headers, body = await system.post(
                "/v1/completions", SMALL, headers=_bearer("sk-good")
            )
            assert status == 429 and headers["Retry-After"] == "1"
            assert body["error"]["code"] == "rate_limit_exceeded"
            system.clock.advance(1.0)  # one token back
            assert (await system.post("/v1/completions", SMALL, headers=_bearer("sk-good")))[
                0
            ] == 200
            async with system.client.get("/health") as health:  # probes need no key
                assert health.status == 200
            async with system.client.get("/metrics") as metrics:
                assert metrics.status == 200
            system.clock.advance(0.05)
            written = b"".join(system.log_lines).decode()
            assert "sk-good" not in written  # never the key, only its hash's first 8
            lines = system.access_lines()
            assert [line["status"] for line in lines] == [
                401,
                401,
                413,
                200,
                200,
                429,
                429,
                200,
                200,
                200,
            ]
            assert {line["key"] for line in lines[2:8]} == {hash_key("sk-good")[:8]}
            assert lines[0]["key"] is None and lines[-1]["key"] is None

    run(scenario)


def test_access_lines_name_route_model_outcome_and_request_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            status, headers, _ = await system.post("/v1/completions", SMALL)
            assert status == 200
            _, given, _ = await system.post(
                "/v1/completions", SMALL, headers={"X-Request-Id": "req-7"}
            )
            assert given["X-Request-Id"] == "req-7"
            async with system.client.get("/health"):
                pass
            first, second, health = system.access_lines()
            assert first["request_id"] == headers["X-Request-Id"]
            assert first["request_id"].startswith(system.gateway.id_prefix)
            assert (first["route"], first["model"], first["backend"]) == (
                "chat",
                "primary",
                "http://primary:8000",
            )
            assert (first["outcome"], first["attempts"], first["status"]) == ("ok", 1, 200)
            assert first["method"] == "POST" and first["path"] == "/v1/completions"
            assert second["request_id"] == "req-7"
            assert "route" not in health and health["path"] == "/health"

    run(scenario)


def test_a_failed_attempt_is_logged_with_its_backend_and_cause(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            system.engine("primary").faults.refuse = True
            status, headers, _ = await system.post("/v1/completions", SMALL)
            assert status == 200 and headers["X-Modelyard-Model"] == "fallback"
            system.gateway.access.flush()
            records = [orjson.loads(x) for chunk in system.log_lines for x in chunk.splitlines()]
            failed = [r for r in records if r["event"] == "attempt_failed"]
            assert failed == [
                {
                    "event": "attempt_failed",
                    "request_id": headers["X-Request-Id"],
                    "model": "primary",
                    "backend": "http://primary:8000",
                    "why": "connect_error: cannot connect (primary: connection refused)",
                }
            ]

    run(scenario)


def test_bad_bodies_and_unknown_urls_get_openai_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as system:
            async with system.client.post("/v1/completions", data=b"{not json") as response:
                body = await response.json()
            assert response.status == 400 and body["error"]["type"] == "invalid_request_error"
            async with system.client.post("/v1/completions", json=[1, 2]) as response:
                assert response.status == 400
            async with system.client.get("/v1/completions") as response:
                body = await response.json()
            assert response.status == 404 and body["error"]["code"] == "unknown_url"
            async with system.client.head("/health") as response:
                assert response.status == 200

    run(scenario)
