"""What every request passes through, built once per route at the composition root (as
starlette's `build_middleware_stack`), not composed again per request:

- outermost: the request id, OpenAI-shaped errors for anything a handler raises, one access-log
  line per request;
- guard (every path but /health and /metrics): the API key, when keys are configured, and the
  caller's rate limit.

Handlers take the request and its `RequestLog`, which they fill in (route, model, outcome).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from modelyard.gateway.access_log import RequestLog
from modelyard.gateway.replies import error_response
from modelyard.gateway.state import Gateway

log = logging.getLogger("modelyard.gateway")

Handler = Callable[[web.Request, RequestLog], Awaitable[web.StreamResponse]]
AppHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_middleware_stack(gateway: Gateway, handler: Handler, guarded: bool) -> AppHandler:
    """`handler` wrapped in the gateway's middleware, outermost first."""
    return outermost(gateway, guard(gateway, handler) if guarded else handler)


def outermost(gateway: Gateway, handler: Handler) -> AppHandler:
    """Request id, OpenAI-shaped errors for everything, one JSON access-log line."""

    async def handle(http: web.Request) -> web.StreamResponse:
        request_id = (
            http.headers.get("X-Request-Id") or f"{gateway.id_prefix}{next(gateway.ids):08x}"
        )
        entry = RequestLog(request_id)
        started = time.monotonic()
        response: web.StreamResponse
        try:
            response = await handler(http, entry)
        except web.HTTPRequestEntityTooLarge as exc:
            response = error_response(
                f"request body too large: {exc.text}",
                413,
                "invalid_request_error",
                "request_too_large",
            )
        except web.HTTPException as exc:
            response = error_response(exc.reason, exc.status, "invalid_request_error")
        except Exception:
            log.exception("unhandled error")  # the client gets JSON, the log the traceback
            response = error_response("internal gateway error", 500, "internal_error")
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        elapsed_ms = (time.monotonic() - started) * 1000
        show_key = gateway.config.keys.enabled
        gateway.access.access(entry, http.method, http.path, response.status, elapsed_ms, show_key)
        return response

    return handle


def guard(gateway: Gateway, handler: Handler) -> Handler:
    """API keys (when configured) and per-caller rate limits, from the configuration in force
    (a reload replaces both)."""

    async def handle(http: web.Request, entry: RequestLog) -> web.StreamResponse:
        config = gateway.config
        caller = http.remote or "unknown"
        if config.keys.enabled:
            key = config.keys.identify(http.headers.get("Authorization"))
            if key is None:
                return error_response(
                    "Incorrect or missing API key (Authorization: Bearer ...)",
                    401,
                    "invalid_request_error",
                    "invalid_api_key",
                )
            caller = key
        entry.caller = caller
        if config.limiter is not None:
            allowed, wait = config.limiter.allow(caller, gateway.clock.now())
            if not allowed:
                limited = error_response(
                    "rate limit exceeded for this API key",
                    429,
                    "rate_limit_exceeded",
                    "rate_limit_exceeded",
                )
                limited.headers["Retry-After"] = str(max(1, round(wait)))
                return limited
        return await handler(http, entry)

    return handle
