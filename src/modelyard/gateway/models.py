"""`GET /v1/models` and `GET /v1/models/{model}`: what a client may send as `model`.

A fleet model's entry is the engine's own (its `/v1/models` entry for that served name, every
field as the engine gives it), fetched from the first replica that answers and kept for the
life of the fleet configuration; until an engine has answered, a minimal entry stands in.
Route aliases and `default` are the gateway's own entries.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from modelyard.engines.api import MODELS
from modelyard.gateway.clock import Clock, within
from modelyard.http.errors import HttpError
from modelyard.http.transport import Transport

JSON = dict[str, Any]
OWNER = "modelyard"


def own_card(name: str) -> JSON:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNER}


def card_in(listing: Any, model: str) -> JSON | None:
    """The entry for `model` in an engine's `/v1/models` answer."""
    data = listing.get("data") if isinstance(listing, dict) else None
    for entry in data if isinstance(data, list) else ():
        if isinstance(entry, dict) and entry.get("id") == model:
            return entry
    return None


async def _listing(transport: Transport, url: str, timeout_s: float) -> Any:
    response = await transport.request("GET", url, MODELS, connect_timeout_s=timeout_s)
    try:
        body = await response.read_all()
        return orjson.loads(body) if response.status == 200 else None
    finally:
        response.close()


async def fetch_card(
    transport: Transport, clock: Clock, urls: list[str], model: str, timeout_s: float
) -> JSON | None:
    """The engine's entry for `model` from the first replica that lists it (None: none did)."""
    for url in urls:
        try:
            listing = await within(clock, timeout_s, _listing(transport, url, timeout_s))
        except (HttpError, TimeoutError, orjson.JSONDecodeError):
            continue
        card = card_in(listing, model)
        if card is not None:
            return card
    return None


async def fill_cards(
    transport: Transport,
    clock: Clock,
    cards: dict[str, JSON],
    replicas: dict[str, list[str]],
    timeout_s: float,
) -> None:
    """Fetch, at once, the entries of the models in `replicas` that `cards` lacks."""
    missing = [model for model in replicas if model not in cards]
    found = await asyncio.gather(
        *(fetch_card(transport, clock, replicas[model], model, timeout_s) for model in missing)
    )
    for model, card in zip(missing, found, strict=True):
        if card is not None:
            cards[model] = card


def listing(names: list[str], cards: dict[str, JSON]) -> JSON:
    return {"object": "list", "data": [cards.get(name) or own_card(name) for name in names]}
