"""The composition of the gateway's HTTP application: every endpoint's handler
(gateway/handlers.py) wrapped once in the middleware stack (gateway/middleware.py), and the
background work (health checks, warm-up) that lives as long as the application.

`create_app(gateway)` is called by the composition root (gateway/server.py, or a test) with the
`Gateway` it built, clock and transport inside; the handlers are closures over that object, so
nothing is looked up on the application per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from modelyard.engines.api import MODELS
from modelyard.gateway import handlers
from modelyard.gateway.endpoints import ROUTED
from modelyard.gateway.health import health_loop, warmup_loop
from modelyard.gateway.middleware import Handler, build_middleware_stack
from modelyard.gateway.state import Gateway

UNGUARDED = frozenset({"/health", "/metrics"})  # probes and scrapers need no key


def create_app(gateway: Gateway, background: bool = True) -> web.Application:
    """The application serving `gateway`; `background`: run health checks and warm-up."""
    app = web.Application(client_max_size=gateway.config.loaded.fleet.gateway.max_body_bytes)

    def add(method: str, path: str, handler: Handler) -> None:
        stack = build_middleware_stack(gateway, handler, guarded=path not in UNGUARDED)
        if method == "GET":
            app.router.add_get(path, stack)  # HEAD too
        else:
            app.router.add_route(method, path, stack)

    for endpoint in ROUTED.values():
        add("POST", endpoint.path, handlers.routed(gateway, endpoint))
    add("GET", MODELS, handlers.model_list(gateway))
    add("GET", MODELS + "/{model:.+}", handlers.model_card(gateway))
    add("GET", "/health", handlers.health(gateway))
    add("GET", "/metrics", handlers.metrics(gateway))
    add("*", "/{path:.*}", handlers.not_routed)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        tasks = (
            [asyncio.create_task(health_loop(gateway)), asyncio.create_task(warmup_loop(gateway))]
            if background
            else []
        )
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        gateway.transport.close()
        gateway.access.flush()

    app.cleanup_ctx.append(lifecycle)
    return app
