"""`sim serve`: OpenAI-compatible servers driven in real time by the engine simulation.

One HTTP port per simulated engine; engines placed on one simulated GPU share it exactly as in
`sim run`. Tokens leave when the simulated engine produces them (`--speed K` runs K times
faster than real time). The API, health and metric names follow vLLM's OpenAI server, and
faults can be injected per model (sim/faults.py).

    clock.py     simulated time and the driver that runs the simulation in step with it
    sinks.py     where tokens go: counted, or written to the socket as they are produced
    answers.py   what the engine says: words, `n` choices, tool calls, log-probabilities
    responses.py the Responses API's events and response object
    tokens.py    counting a request's tokens; embeddings
    metrics.py   a served engine's identity, faults and vLLM-named metrics
    app.py       the HTTP endpoints
    listeners.py one port per engine, closed for a while by a fault
    serve.py     building the served engines from a fleet, serving until a signal

Prompt tokens are counted by a fixed rule (docs/simulator.md): one token per 4 UTF-8 bytes of
text, at least 1, plus 4 per chat message; a list of token ids counts its length. The model
never emits an end-of-sequence token, so every request generates exactly `max_tokens`.
"""

from modelyard.sim.server.app import SimServer
from modelyard.sim.server.clock import Clock, RealtimeDriver
from modelyard.sim.server.metrics import SimModel
from modelyard.sim.server.serve import Endpoint, ServeOptions, build_models, serve
from modelyard.sim.server.tokens import count_prompt_tokens

__all__ = [
    "Clock",
    "Endpoint",
    "RealtimeDriver",
    "ServeOptions",
    "SimModel",
    "SimServer",
    "build_models",
    "count_prompt_tokens",
    "serve",
]
