"""`modelyard deploy k8s` and `deploy validate` end to end (issues #8, #20)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import Cli
from tests.deploy.helpers import EXAMPLES, FIXTURES


def test_render_with_autoscaling_from_given_capacity_then_validate(
    tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "out"
    done = cli(
        "deploy",
        "k8s",
        str(EXAMPLES / "isolated.yaml"),
        "-o",
        str(out),
        "--capacity",
        "llama-8b=2",
        "--capacity",
        "mistral-7b=2",
        "--gateway-api",
        "infra/inference-gw",
        "--service-monitor",
    )
    assert done.returncode == 0, done.stderr
    # peak 100,000 x 4 / 86,400 x 3 = 13.9 req/s; the primary's 95% at 2 req/s per replica -> 7
    assert "autoscaling llama-8b: 2-7 replicas" in done.stderr
    assert "given (--capacity)" in done.stderr
    assert "replicas mistral-7b: 1, no autoscaler" in done.stderr
    docs = list(yaml.safe_load_all((out / "llama-8b.yaml").read_text()))
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 7
    checked = cli("deploy", "validate", str(out), "--k8s-version", "1.33")
    assert checked.returncode == 0, checked.stderr
    assert "documents valid for Kubernetes 1.33" in checked.stdout


def test_stdout_is_what_kubectl_apply_takes(cli: Cli) -> None:
    printed = cli("deploy", "k8s", str(EXAMPLES / "shared-timesliced.yaml"), "--stdout")
    assert printed.returncode == 0, printed.stderr
    docs = list(yaml.safe_load_all(printed.stdout))
    kinds = [d["kind"] for d in docs]
    assert "Kustomization" not in kinds and kinds[0] == "Namespace"
    assert all(d["metadata"].get("namespace") != "gpu-operator" for d in docs)
    assert (
        "node-config/ (the GPU operator's configuration for shared groups) is not in this stream"
        in printed.stderr
    )
    assert "warning: shared group 0" in printed.stderr


def test_bad_input_is_one_line_and_no_traceback(cli: Cli) -> None:
    fleet = str(EXAMPLES / "isolated.yaml")
    cases = {
        ("deploy", "k8s", fleet): "give exactly one of -o DIR or --stdout",
        (
            "deploy",
            "k8s",
            fleet,
            "--stdout",
            "--workload",
            "pods",
        ): "--workload pods: choose one of auto",
        (
            "deploy",
            "k8s",
            fleet,
            "--stdout",
            "--image",
            "vllm",
        ): "--image vllm: expected ENGINE=IMAGE",
        (
            "deploy",
            "k8s",
            fleet,
            "--stdout",
            "--gateway-api",
            "ns/",
        ): "expected [NAMESPACE/]GATEWAY",
        (
            "deploy",
            "k8s",
            fleet,
            "--stdout",
            "--autoscale",
            "none",
            "--image",
            "vllm=vllm/vllm-openai",
        ): "names no tag or digest",
        (
            "deploy",
            "k8s",
            fleet,
            "-o",
            fleet,
            "--autoscale",
            "none",
        ): "exists and is not a directory",
    }
    for args, expected in cases.items():
        done = cli(*args)
        code, err = done.returncode, done.stderr
        assert code == 1, (args, err)
        assert expected in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    done = cli("deploy", "validate", str(FIXTURES))
    code, err = done.returncode, done.stderr
    assert code == 1 and "error: 11 problems" in err
    assert err.count("invalid:") == 11 and "Traceback" not in err
