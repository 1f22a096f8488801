from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.errors import FleetError
from modelyard.fleet import fleet_json_schema, load_fleet
from tests.conftest import ROOT, Cli

GOOD = """\
name: chat-prod
models:
  llama-8b: {catalog: llama-3.1-8b, quant: awq-w4-g128, engine: vllm, gpu: a10g}
  mistral-7b: {catalog: mistral-7b-instruct-v0.2, quant: awq-w4-g64, engine: vllm, gpu: a10g}
routes:
  - {match: {task: long_form}, targets: [llama-8b, mistral-7b]}
  - {targets: [llama-8b, mistral-7b]}
"""


def test_example_fleet_validates() -> None:
    loaded = load_fleet(ROOT / "examples" / "fleet.yaml")
    fleet = loaded.fleet
    assert set(fleet.models) == {"llama-8b", "mistral-7b"}
    assert loaded.model_spec("llama-8b").hf_id == "meta-llama/Llama-3.1-8B-Instruct"
    assert loaded.model_spec("mistral-7b").hf_id == "mistralai/Mistral-7B-Instruct-v0.2"
    assert {m.gpu for m in fleet.models.values()} == {"a10g"}
    assert fleet.policy.breaker.open_for == 30.0
    assert fleet.policy.retry.backoff == pytest.approx(0.05)
    assert fleet.policy.health.warmup_every == 300.0
    assert fleet.slo.ttft_p99 == pytest.approx(0.8)
    assert fleet.traffic.fallback_rate == 0.05


def test_defaults(write_fleet: Callable[[str], Path]) -> None:
    loaded = load_fleet(
        write_fleet("name: x\nmodels:\n  g: {catalog: gemma-3-270m, engine: llamacpp}\n")
    )
    model = loaded.fleet.models["g"]
    assert model.quant_name == "gguf-q4_k_m"
    assert loaded.gpu("g") is None
    assert loaded.fleet.placement == "isolated"
    assert loaded.fleet.policy.timeouts.first_token == 10.0


def test_shared_group_fractions(write_fleet: Callable[[str], Path]) -> None:
    loaded = load_fleet(
        write_fleet(
            GOOD.replace("gpu: a10g", "gpu: a100-80gb")
            + """\
placement:
  shared:
    - gpu: a100-80gb
      models: [llama-8b, mistral-7b]
      memory_fractions: {llama-8b: 0.6}
"""
        )
    )
    group = loaded.fleet.shared_groups()[0]
    fractions = loaded.memory_fractions(group)
    assert fractions["llama-8b"] == pytest.approx(0.6)
    assert fractions["mistral-7b"] == pytest.approx(0.3)


def test_alias_names_resolve(write_fleet: Callable[[str], Path]) -> None:
    loaded = load_fleet(write_fleet(GOOD.replace("mistral-7b-instruct-v0.2", "mistral-2")))
    assert loaded.catalog.resolve_model_name(loaded.fleet.models["mistral-7b"].catalog) == (
        "mistral-7b-instruct-v0.2"
    )


# (fleet text, the exact error lines). Line numbers are the file's.
BAD_FLEETS: list[tuple[str, str, list[str]]] = [
    (
        "unknown-gpu",
        GOOD.replace("engine: vllm, gpu: a10g}\n  mistral", "engine: vllm, gpu: a10}\n  mistral"),
        [
            "fleet.yaml:3: models.llama-8b.gpu: unknown GPU 'a10' (did you mean 'a10g'? known: "
            "a100-40gb, a100-80gb, a10g, h100-sxm, h200, l4)"
        ],
    ),
    (
        "unknown-model",
        GOOD.replace("catalog: llama-3.1-8b", "catalog: llama-3.1-8"),
        [
            "fleet.yaml:3: models.llama-8b.catalog: unknown model 'llama-3.1-8' (did you mean "
            "'llama-3.1-8b'? known: gemma-3-270m, llama-3.1-70b, llama-3.1-8b, llama-4-scout-17b-16e, "
            "mistral-7b-instruct-v0.2, mistral-7b-v0.3, qwen2.5-7b, qwen3-14b, qwen3-4b, qwen3-8b)"
        ],
    ),
    (
        "unknown-quant",
        GOOD.replace("quant: awq-w4-g128", "quant: awq-w4"),
        [
            "fleet.yaml:3: models.llama-8b.quant: unknown quantization 'awq-w4' (did you mean "
            "'awq-w4-g64'? known: awq-w4-g128, awq-w4-g64, bf16, fp8, gguf-q4_k_m, gptq-w4-g128)"
        ],
    ),
    (
        "unknown-engine",
        GOOD.replace("engine: vllm, gpu: a10g}\n  mistral", "engine: vlm, gpu: a10g}\n  mistral"),
        [
            "fleet.yaml:3: models.llama-8b.engine: Input should be 'vllm', 'sglang', 'llamacpp', "
            "'tgi', 'ollama' or 'sim'"
        ],
    ),
    (
        "route-to-missing-model",
        GOOD.replace(
            "targets: [llama-8b, mistral-7b]}\n  - {targets",
            "targets: [llama-8b, mistral]}\n  - {targets",
        ),
        [
            "fleet.yaml:6: routes.0.targets.1: unknown model 'mistral' (did you mean 'mistral-7b'? "
            "known: llama-8b, mistral-7b)"
        ],
    ),
    (
        "fallback-rate-out-of-range",
        GOOD + "traffic: {fallback_rate: 1.5}\n",
        ["fleet.yaml:8: traffic.fallback_rate: must be between 0 and 1, got 1.5"],
    ),
    (
        "bad-duration",
        GOOD + "policy:\n  breaker: {open_for: 30 sec}\n",
        [
            "fleet.yaml:9: policy.breaker.open_for: invalid duration '30 sec' (use e.g. 50ms, 30s, 5m, 1h)"
        ],
    ),
    (
        "unknown-field",
        GOOD.replace("  mistral-7b: {", "  mistral-7b: {replica: 2, "),
        [
            "fleet.yaml:4: models.mistral-7b.replica: unknown field (valid: catalog, engine, engine_version, quant, gpu, "
            "replicas, endpoints, max_model_len, gpu_memory_utilization, max_num_seqs, "
            "max_num_batched_tokens, kv_cache_dtype, tensor_parallel_size, engine_args, weights)"
        ],
    ),
    (
        "duplicate-model-name",
        GOOD.replace(
            "  mistral-7b: {catalog: mistral-7b-instruct-v0.2",
            "  llama-8b: {catalog: mistral-7b-instruct-v0.2",
        ),
        ["fleet.yaml:4: models.llama-8b: duplicate key (first defined on line 3)"],
    ),
    (
        "shared-group-missing-model",
        GOOD + "placement:\n  shared:\n    - {gpu: a10g, models: [llama-8b, qwen]}\n",
        [
            "fleet.yaml:10: placement.shared.0.models.1: unknown model 'qwen' (known: llama-8b, mistral-7b)"
        ],
    ),
    (
        "model-in-two-groups",
        GOOD.replace("gpu: a10g", "gpu: h100-sxm") + "placement:\n  shared:\n"
        "    - {gpu: h100-sxm, models: [llama-8b, mistral-7b]}\n"
        "    - {gpu: h100-sxm, models: [mistral-7b, llama-8b]}\n",
        [
            "fleet.yaml:11: placement.shared.1.models.0: 'mistral-7b' is already placed in shared group 0",
            "fleet.yaml:11: placement.shared.1.models.1: 'llama-8b' is already placed in shared group 0",
        ],
    ),
    (
        "fractions-over-limit",
        GOOD.replace("gpu: a10g", "gpu: h100-sxm") + "placement:\n  shared:\n"
        "    - gpu: h100-sxm\n      models: [llama-8b, mistral-7b]\n"
        "      memory_fractions: {llama-8b: 0.6, mistral-7b: 0.5}\n",
        [
            "fleet.yaml:12: placement.shared.0.memory_fractions: fractions add up to 1.10, more than "
            "the group's memory_limit 0.90"
        ],
    ),
    (
        "member-on-other-gpu",
        GOOD + "placement:\n  shared:\n    - {gpu: h100-sxm, models: [llama-8b, mistral-7b]}\n",
        [
            "fleet.yaml:10: placement.shared.0.models.0: 'llama-8b' says gpu 'a10g' but its shared "
            "group is on 'h100-sxm'",
            "fleet.yaml:10: placement.shared.0.models.1: 'mistral-7b' says gpu 'a10g' but its shared "
            "group is on 'h100-sxm'",
        ],
    ),
    (
        "two-default-routes",
        GOOD + "  - {targets: [mistral-7b]}\n",
        [
            "fleet.yaml:8: routes.2: a second default route (route 1 has no match either); give one a "
            "match: {task: ...}"
        ],
    ),
    (
        "duplicate-task",
        GOOD.replace(
            "  - {targets: [llama-8b, mistral-7b]}",
            "  - {match: {task: long_form}, targets: [mistral-7b]}",
        ),
        ["fleet.yaml:7: routes.1.match.task: task 'long_form' is already routed by route 0"],
    ),
    (
        "quant-engine-mismatch",
        GOOD.replace("quant: awq-w4-g128, engine: vllm", "quant: awq-w4-g128, engine: llamacpp"),
        [
            "fleet.yaml:3: models.llama-8b.quant: 'awq-w4-g128' is not served by engine 'llamacpp' "
            "(profiles for llamacpp: gguf-q4_k_m)"
        ],
    ),
    (
        "context-too-long",
        GOOD.replace("gpu: a10g}\n  mistral", "gpu: a10g, max_model_len: 200000}\n  mistral"),
        [
            "fleet.yaml:3: models.llama-8b.max_model_len: 200000 exceeds llama-3.1-8b's maximum context 131072"
        ],
    ),
    (
        "sim-without-gpu",
        "name: x\nmodels:\n  s: {catalog: gemma-3-270m, engine: sim}\n",
        [
            "fleet.yaml:3: models.s.gpu: engine 'sim' needs the GPU to simulate (known: a100-40gb, "
            "a100-80gb, a10g, h100-sxm, h200, l4)"
        ],
    ),
    (
        "replicas-vs-endpoints",
        GOOD.replace(
            "gpu: a10g}\n  mistral",
            "gpu: a10g, replicas: 2, endpoints: ['http://127.0.0.1:8001']}\n  mistral",
        ),
        [
            "fleet.yaml:3: models.llama-8b.replicas: 2 replicas but 1 endpoints listed (omit replicas "
            "when endpoints are given)"
        ],
    ),
    (
        "bad-endpoint",
        GOOD.replace(
            "gpu: a10g}\n  mistral", "gpu: a10g, endpoints: ['127.0.0.1:8001']}\n  mistral"
        ),
        ["fleet.yaml:3: models.llama-8b.endpoints.0: '127.0.0.1:8001' is not an http(s) URL"],
    ),
    (
        "timeout-longer-than-total",
        GOOD + "policy:\n  timeouts: {first_token: 20m, total: 10m}\n",
        [
            "fleet.yaml:9: policy.timeouts.first_token: first_token (1200s) is longer than total (600s)"
        ],
    ),
    (
        "missing-models",
        "name: x\n",
        ["fleet.yaml:1: models: required field is missing"],
    ),
    (
        "not-a-mapping",
        "- just\n- a list\n",
        ["fleet.yaml:1: a fleet file must be a YAML mapping (name:, models:, ...)"],
    ),
    (
        "yaml-syntax",
        "name: x\nmodels: {a: [\n",
        ["fleet.yaml:3: invalid YAML: expected the node content, but found '<stream end>'"],
    ),
    (
        "fp8-kv-bad-value-and-negative-replicas",
        GOOD.replace(
            "gpu: a10g}\n  mistral", "gpu: a10g, replicas: 0, kv_cache_dtype: int8}\n  mistral"
        ),
        [
            "fleet.yaml:3: models.llama-8b.replicas: Input should be greater than or equal to 1",
            "fleet.yaml:3: models.llama-8b.kv_cache_dtype: Input should be 'auto' or 'fp8'",
        ],
    ),
    (
        "alias-shadows-model",
        GOOD.replace(
            "  - {targets: [llama-8b, mistral-7b]}", "  - {name: llama-8b, targets: [llama-8b]}"
        ),
        ["fleet.yaml:7: routes.1.name: 'llama-8b' is also a model name; aliases must differ"],
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD_FLEETS, ids=[c[0] for c in BAD_FLEETS])
def test_bad_fleet_messages(
    case: str, text: str, expected: list[str], write_fleet: Callable[[str], Path]
) -> None:
    path = write_fleet(text)
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    prefix = str(path.parent) + "/"
    assert [line.removeprefix(prefix) for line in info.value.problems] == expected


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="no such file"):
        load_fleet(tmp_path / "nope.yaml")


def test_user_catalog_from_fleet(write_fleet: Callable[[str], Path], tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text("""\
gpus:
  rtx-4090:
    display_name: GeForce RTX 4090
    memory_gb: 24
    visible_memory_mib: 24564
    memory_bandwidth_gbps: 1008
    bf16_tflops: 165
    compute_capability: "8.9"
    source: https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4090/
    memory_source: nvidia-smi
    as_of: 2026-11-28
""")
    loaded = load_fleet(
        write_fleet(
            "name: x\ncatalog: [extra.yaml]\nmodels:\n  m: {catalog: qwen2.5-7b, gpu: rtx-4090}\n"
        )
    )
    gpu = loaded.gpu("m")
    assert gpu is not None and gpu.memory_bandwidth_gbps == 1008


def test_json_schema_describes_fleet() -> None:
    schema = fleet_json_schema()
    assert schema["title"] == "modelyard fleet file"
    assert set(schema["required"]) == {"name", "models"}
    assert "FleetModel" in schema["$defs"]
    assert schema["$defs"]["FleetModel"]["additionalProperties"] is False
    json.dumps(schema)


def test_cli_validate_ok_and_errors(write_fleet: Callable[[str], Path], cli: Cli) -> None:
    ok = cli("validate", str(ROOT / "examples" / "fleet.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK ")
    bad = write_fleet(BAD_FLEETS[0][1])
    failed = cli("validate", str(bad))
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert f"error: {bad}:3: models.llama-8b.gpu: unknown GPU 'a10'" in failed.stderr


def test_cli_schema_is_json(cli: Cli) -> None:
    result = cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "modelyard fleet file"


def test_cli_usage_error_is_exit_2(cli: Cli) -> None:
    result = cli("validate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_cli_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "modelyard 0.1.0"


T4 = """\
gpus:
  t4:
    display_name: NVIDIA T4
    memory_gb: 16
    visible_memory_mib: 15360
    memory_bandwidth_gbps: 320
    bf16_tflops: 65
    compute_capability: "7.5"
    source: https://www.nvidia.com/en-us/data-center/tesla-t4/
    memory_source: nvidia-smi
    as_of: 2026-12-01
"""


def test_compute_capability_is_checked_on_the_groups_gpu(
    write_fleet: Callable[[str], Path], tmp_path: Path
) -> None:
    (tmp_path / "t4.yaml").write_text(T4)
    path = write_fleet("""\
name: x
catalog: [t4.yaml]
models:
  a: {catalog: qwen2.5-7b, quant: awq-w4-g128}
  b: {catalog: gemma-3-270m}
placement:
  shared: [{gpu: t4, models: [a, b]}]
""")
    with pytest.raises(FleetError) as caught:
        load_fleet(path)
    assert [p.replace(f"{path.parent}/", "") for p in caught.value.problems] == [
        "fleet.yaml:4: models.a.quant: 'awq-w4-g128' needs compute capability 8.0+, t4 has 7.5",
        "fleet.yaml:5: models.b.quant: 'bf16' needs compute capability 8.0+, t4 has 7.5",
    ]


def test_tensor_parallel_size_is_checked(write_fleet: Callable[[str], Path]) -> None:
    path = write_fleet("""\
name: x
models:
  big: {catalog: llama-3.1-70b, gpu: h100-sxm, tensor_parallel_size: 3}
  small: {catalog: gemma-3-270m, engine: llamacpp, tensor_parallel_size: 2}
  a: {catalog: llama-3.1-8b, gpu: h100-sxm, tensor_parallel_size: 2}
  b: {catalog: mistral-7b-instruct-v0.2, gpu: h100-sxm}
placement:
  shared: [{gpu: h100-sxm, models: [a, b]}]
""")
    with pytest.raises(FleetError) as caught:
        load_fleet(path)
    assert [p.replace(f"{path.parent}/", "") for p in caught.value.problems] == [
        "fleet.yaml:3: models.big.tensor_parallel_size: 64 attention heads do not split into 3 "
        "equal parts",
        "fleet.yaml:4: models.small.tensor_parallel_size: engine 'llamacpp' cannot split a model "
        "over GPUs (engines that can: vllm, sglang, tgi, sim)",
        "fleet.yaml:8: placement.shared.0.models.1: 'b' spans 1 GPUs but 'a' spans 2: members "
        "of a group share the same GPUs",
    ]
