"""Through the gateway to real llama.cpp engines started by the launcher."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import openai
import pytest

from modelyard.engines import launcher
from modelyard.engines.adapters import LLAMA_SERVER
from modelyard.fleet import load_fleet
from tests.procs import start_gateway

pytestmark = pytest.mark.slow


def test_gateway_to_llamacpp_with_fallback(tmp_path: Path) -> None:
    if not LLAMA_SERVER.exists():
        pytest.fail(f"{LLAMA_SERVER} is missing: run `make llamacpp`")
    fleet_path = tmp_path / "fleet.yaml"
    fleet_path.write_text("""\
name: real
models:
  primary: {catalog: gemma-3-270m, engine: llamacpp, max_model_len: 512}
  fallback: {catalog: gemma-3-270m, engine: llamacpp, max_model_len: 512}
routes:
  - {targets: [primary, fallback]}
policy:
  timeouts: {connect: 1s, first_token: 20s, idle: 10s, total: 60s}
  health: {interval: 1s, warmup_every: 1h}
""")
    state = tmp_path / ".modelyard"  # the gateway runs in tmp_path and finds it by default
    started = launcher.up(load_fleet(fleet_path), state, timeout_s=120)
    gateway = start_gateway(fleet_path, tmp_path)
    try:
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
            first = client.completions.with_raw_response.create(
                model="default", prompt="The sky is", max_tokens=4
            )
            assert first.headers["X-Modelyard-Model"] == "primary"
            assert first.parse().usage.completion_tokens == 4  # type: ignore[union-attr]
            os.killpg(started[0].pid, signal.SIGKILL)  # the primary engine dies
            after = client.completions.with_raw_response.create(
                model="default", prompt="The sky is", max_tokens=4
            )
            assert after.headers["X-Modelyard-Model"] == "fallback"
            stream = client.chat.completions.create(
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=3,
                stream=True,
                model="default",
            )
            assert sum(1 for c in stream if c.choices and c.choices[0].delta.content) >= 1
    finally:
        gateway.stop()
        launcher.down(state)
