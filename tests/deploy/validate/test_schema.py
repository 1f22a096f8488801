"""Strict schemas: Kubernetes kinds and the vendored custom resources (issue #20)."""

from __future__ import annotations

import copy
import hashlib
from importlib import resources
from pathlib import Path

import pytest
import yaml

from modelyard.deploy import k8s
from modelyard.deploy.errors import DeployError
from modelyard.deploy.validate import check_directory, check_documents
from modelyard.deploy.validate.schema import custom_schemas
from tests.deploy.helpers import DEPLOYABLE, FIXTURES, everything, messages, pairs, rendered


def test_vendored_crds_are_the_published_files() -> None:
    folder = resources.files("modelyard.deploy").joinpath("schemas")
    sources = yaml.safe_load(folder.joinpath("SOURCES.yaml").read_text())
    assert {s["project"] for s in sources} == {
        "Gateway API (standard channel)",
        "Gateway API Inference Extension",
        "KEDA",
        "Prometheus Operator",
    }
    for source in sources:
        data = folder.joinpath(source["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == source["sha256"], source["file"]
        assert (
            source["source"].startswith("https://github.com/")
            and str(source["version"]) in source["source"]
        )
    assert ("keda.sh/v1alpha1", "ScaledObject") in custom_schemas()
    assert ("inference.networking.k8s.io/v1", "InferencePool") in custom_schemas()


def _broken(kind: str, name: str, change: object) -> list[str]:
    docs = copy.deepcopy(pairs(everything(DEPLOYABLE[0])))
    doc = next(d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    change(doc)  # type: ignore[operator]
    return messages(docs)


def test_custom_resources_are_checked_strictly() -> None:
    found = _broken("ScaledObject", "llama-8b", lambda d: d["spec"].update(replicas=3))
    assert any(
        "ScaledObject/llama-8b: schema (KEDA v2.20.2, strict): spec: Additional properties are not allowed ('replicas'"
        in m
        for m in found
    )
    found = _broken(
        "HTTPRoute",
        "chat-prod-gateway",
        lambda d: d["spec"]["rules"][0]["timeouts"].update(request="10 minutes"),
    )
    assert any(
        "schema (Gateway API (standard channel) v1.6.1, strict): spec.rules.0.timeouts.request" in m
        for m in found
    )
    found = _broken("InferencePool", "llama-8b", lambda d: d["spec"].pop("targetPorts"))
    assert any(
        "schema (Gateway API Inference Extension v1.6.0, strict): spec: 'targetPorts' is a required property"
        in m
        for m in found
    )
    found = _broken("ServiceMonitor", "llama-8b", lambda d: d["metadata"].update(bogus=1))
    assert any("schema (Prometheus Operator v0.93.0, strict): metadata" in m for m in found)


def test_core_kinds_are_checked_strictly_and_unknown_kinds_are_findings() -> None:
    docs = copy.deepcopy(pairs(rendered("isolated.yaml")))
    next(d for _, d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]["gpus"] = 1
    assert any("schema (Kubernetes 1.30, strict)" in m and "'gpus'" in m for m in messages(docs))
    unknown = check_documents(
        [("x.yaml", {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})]
    )
    assert "schema: no Widget in apiVersion example.com/v1" in unknown[0].message


def test_the_seeds_manifest_is_rejected_with_the_right_reasons() -> None:
    findings = [str(f) for f in check_directory(FIXTURES)]
    text = "\n".join(findings)
    assert "StatefulSet/llama-8b: schema" in text and "'volumeClaimTemplates'" in text
    assert "'nvidia.com/a10g' is not a resource any device plugin advertises" in text
    assert "needs a startupProbe" in text
    assert "no memory-backed /dev/shm" in text
    assert "image 'vllm/vllm-openai:latest' floats" in text
    assert "Pod Security restricted: container vllm: runAsNonRoot must be true" in text
    assert "serves a Service but has no readinessProbe" in text
    assert len(findings) == 11, findings


def test_check_directory_reads_what_deploy_writes(tmp_path: Path) -> None:
    written = k8s.write(rendered("shared-mig.yaml"), tmp_path)
    assert (tmp_path / "node-config" / "mig-config.yaml") in written
    assert check_directory(tmp_path, "1.29") == []
    (tmp_path / "gateway.yaml").unlink()
    found = [str(f) for f in check_directory(tmp_path)]
    assert "kustomization.yaml: Kustomization/-: resource gateway.yaml does not exist" in found
    with pytest.raises(DeployError, match="exists and is not a directory"):
        k8s.write(rendered("shared-mig.yaml"), tmp_path / "kustomization.yaml")


def test_unsupported_version_and_bad_directory(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"1\.20 is not supported"):
        check_documents([], "1.20")
    with pytest.raises(DeployError, match=r"no \.yaml files"):
        check_directory(tmp_path)
    (tmp_path / "bad.yaml").write_text("a: [b\n")
    with pytest.raises(DeployError, match=r"bad\.yaml: not valid YAML"):
        check_directory(tmp_path)
