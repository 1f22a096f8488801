"""The gateway's own answers: JSON bodies and OpenAI-shaped errors
(`{"error": {"message", "type", "code"}}`), and upstream errors put in that shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    message: str,
    status: int,
    kind: str,
    code: str | int | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    error: dict[str, Any] = {
        "message": message,
        "type": kind,
        "code": code if code is not None else status,
    }
    if extra:
        error.update(extra)
    return json_response({"error": error}, status)


def model_not_found(name: object, known: list[str]) -> web.Response:
    return error_response(
        f"The model `{name}` does not exist. Known: {', '.join(known)}",
        404,
        "invalid_request_error",
        "model_not_found",
    )


def openai_error_body(status: int, body: bytes) -> bytes:
    """An upstream error as OpenAI's shape: a body already in it passes unchanged; vLLM's
    older {"object": "error", "message": ...} and FastAPI's {"detail": ...} (vLLM's answer for
    a route it does not have) become {"error": {...}} with their message and type."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return body
    if isinstance(data, dict):
        message = data.get("message") or data.get("detail")
        kind = data.get("type") or "upstream_error"
    else:
        message, kind = body.decode(errors="replace").strip(), "upstream_error"
    return orjson.dumps(
        {"error": {"message": str(message or f"HTTP {status}"), "type": kind, "code": status}}
    )
