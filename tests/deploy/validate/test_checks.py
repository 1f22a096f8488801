"""Each semantic check has a failing case: a valid render with one thing broken (issue #8, #20)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tests.deploy.helpers import BOUNDS, DEPLOYABLE, Doc, everything, messages, pairs, rendered

Docs = dict[tuple[str, str], Doc]


def broken(change: Callable[[Docs], Any], bounds: bool = False) -> list[str]:
    result = rendered("isolated.yaml", {"llama-8b": BOUNDS} if bounds else None)
    docs = copy.deepcopy(pairs(result))
    assert messages(docs) == []
    change({(d["kind"], d.get("metadata", {}).get("name", "-")): d for _, d in docs})
    return messages(docs)


def _pod(docs: Docs, kind: str = "Deployment", name: str = "mistral-7b") -> Doc:
    return docs[(kind, name)]["spec"]["template"]["spec"]


def _engine(docs: Docs) -> Doc:
    return _pod(docs)["containers"][0]


def test_gpu_resource_name_must_be_advertised() -> None:
    def change(docs: Docs) -> None:
        resources = _engine(docs)["resources"]
        for part in ("requests", "limits"):
            del resources[part]["nvidia.com/gpu"]
            resources[part]["nvidia.com/a10g"] = "1"

    assert any("'nvidia.com/a10g' is not a resource any device plugin" in m for m in broken(change))


def test_gpu_requests_equal_limits() -> None:
    def change(docs: Docs) -> None:
        _engine(docs)["resources"]["limits"]["nvidia.com/gpu"] = "2"

    assert any("requests (1) must equal limits (2)" in m for m in broken(change))


def test_selectors_match_pods() -> None:
    def workload(docs: Docs) -> None:
        docs[("Deployment", "mistral-7b")]["spec"]["selector"]["matchLabels"][
            "app.kubernetes.io/name"
        ] = "x"

    assert any("does not match the pod template's labels" in m for m in broken(workload))

    def service(docs: Docs) -> None:
        docs[("Service", "mistral-7b")]["spec"]["selector"] = {"app": "nothing"}

    assert any(
        "Service/mistral-7b: selector" in m and "matches no pod" in m for m in broken(service)
    )

    def budget(docs: Docs) -> None:
        docs[("PodDisruptionBudget", "chat-prod-gateway")]["spec"]["selector"]["matchLabels"] = {
            "app": "x"
        }

    assert any("PodDisruptionBudget" in m and "matches no pod" in m for m in broken(budget))


def test_probe_ports_exist() -> None:
    def change(docs: Docs) -> None:
        _engine(docs)["readinessProbe"]["httpGet"]["port"] = "metrics"

    assert any("readinessProbe uses port 'metrics'" in m for m in broken(change))


def test_gpu_engines_need_a_startup_probe_and_memory_backed_shm() -> None:
    def no_startup(docs: Docs) -> None:
        del _engine(docs)["startupProbe"]

    assert any("needs a startupProbe" in m for m in broken(no_startup))

    def disk_shm(docs: Docs) -> None:
        next(v for v in _pod(docs)["volumes"] if v["name"] == "dshm")["emptyDir"] = {}

    assert any("no memory-backed /dev/shm" in m for m in broken(disk_shm))


def test_service_named_like_an_engine() -> None:
    def change(docs: Docs) -> None:
        docs[("Service", "mistral-7b")]["metadata"]["name"] = "vllm"

    assert any("Service/vllm" in m and "VLLM_PORT" in m for m in broken(change))


def test_readwriteonce_with_rolling_update_or_replicas() -> None:
    def rolling(docs: Docs) -> None:
        docs[("Deployment", "mistral-7b")]["spec"]["strategy"] = {"type": "RollingUpdate"}

    assert any("with a RollingUpdate update" in m and "Multi-Attach" in m for m in broken(rolling))

    def replicas(docs: Docs) -> None:
        docs[("Deployment", "mistral-7b")]["spec"]["replicas"] = 3

    assert any("3 replicas share ReadWriteOnce volume" in m for m in broken(replicas))


def test_quantities_and_floating_images() -> None:
    def memory(docs: Docs) -> None:
        _engine(docs)["resources"]["limits"]["memory"] = "17 GB"

    assert any("'17 GB' is not a Kubernetes quantity" in m for m in broken(memory))

    def latest(docs: Docs) -> None:
        _engine(docs)["image"] = "vllm/vllm-openai:latest"

    assert any("image 'vllm/vllm-openai:latest' floats" in m for m in broken(latest))


def test_pod_security_restricted() -> None:
    cases: dict[str, Callable[[Docs], None]] = {
        "runAsNonRoot must be true": lambda d: (
            _pod(d)["securityContext"].pop("runAsNonRoot")
            and _engine(d)["securityContext"].pop("runAsNonRoot")
        ),
        "allowPrivilegeEscalation must be false": lambda d: _engine(d)["securityContext"].update(
            allowPrivilegeEscalation=True
        ),
        "capabilities.drop must include ALL": lambda d: _engine(d)["securityContext"].pop(
            "capabilities"
        ),
        "adds capabilities ['SYS_ADMIN']": lambda d: _engine(d)["securityContext"][
            "capabilities"
        ].update(add=["SYS_ADMIN"]),
        "seccompProfile.type must be RuntimeDefault or Localhost": lambda d: (
            _pod(d)["securityContext"].pop("seccompProfile"),
            _engine(d)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        ),
        "hostPath mounts the node's file system": lambda d: _pod(d)["volumes"].append(
            {"name": "host", "hostPath": {"path": "/"}}
        ),
        "hostNetwork: true shares the node's namespace": lambda d: _pod(d).update(hostNetwork=True),
        "runAsUser 0 is root": lambda d: _engine(d)["securityContext"].update(runAsUser=0),
        "privileged": lambda d: _engine(d)["securityContext"].update(privileged=True),
    }
    for expected, change in cases.items():
        found = broken(change)
        assert any("Pod Security restricted" in m and expected in m for m in found), (
            expected,
            found,
        )


def test_rollouts_that_cut_streams() -> None:
    def short_grace(docs: Docs) -> None:
        _pod(docs, name="chat-prod-gateway")["terminationGracePeriodSeconds"] = 30

    assert any(
        "terminationGracePeriodSeconds 30 < preStop 10 s + --grace 600" in m
        for m in broken(short_grace)
    )

    def short_drain(docs: Docs) -> None:
        args = _pod(docs, name="chat-prod-gateway")["containers"][0]["args"]
        args[args.index("--grace") + 1] = "20"

    assert any(
        "gateway --grace 20 s is shorter than its fleet's policy.timeouts.total 600 s" in m
        for m in broken(short_drain)
    )

    def no_readiness(docs: Docs) -> None:
        del _engine(docs)["readinessProbe"]

    assert any("serves a Service but has no readinessProbe" in m for m in broken(no_readiness))

    def no_pre_stop(docs: Docs) -> None:
        del _engine(docs)["lifecycle"]

    assert any("serves only 0 s after it starts terminating" in m for m in broken(no_pre_stop))

    def unavailable(docs: Docs) -> None:
        docs[("Deployment", "chat-prod-gateway")]["spec"]["strategy"]["rollingUpdate"][
            "maxUnavailable"
        ] = 1

    assert any("RollingUpdate maxUnavailable 1" in m for m in broken(unavailable))


def test_replicas_an_autoscaler_owns_and_a_drain_could_take() -> None:
    def fixed(docs: Docs) -> None:
        docs[("StatefulSet", "llama-8b")]["spec"]["replicas"] = 2

    assert any(
        "sets replicas: 2 while ScaledObject/llama-8b owns the count" in m
        for m in broken(fixed, bounds=True)
    )

    def no_budget(docs: Docs) -> None:
        docs[("PodDisruptionBudget", "llama-8b")]["spec"]["selector"]["matchLabels"] = {"app": "x"}

    assert any(
        "up to 6 replicas but no PodDisruptionBudget" in m for m in broken(no_budget, bounds=True)
    )

    def no_spread(docs: Docs) -> None:
        del _pod(docs, "StatefulSet", "llama-8b")["topologySpreadConstraints"]

    assert any("no topology spread or anti-affinity" in m for m in broken(no_spread, bounds=True))

    def dangling(docs: Docs) -> None:
        docs[("ScaledObject", "llama-8b")]["spec"]["scaleTargetRef"]["name"] = "gone"

    assert any(
        "scaleTargetRef StatefulSet/gone is not in these manifests" in m
        for m in broken(dangling, bounds=True)
    )


def test_engines_open_to_the_cluster() -> None:
    def no_policy(docs: Docs) -> None:
        docs[("NetworkPolicy", "chat-prod-engines")]["spec"]["podSelector"]["matchLabels"] = {
            "app": "x"
        }

    found = broken(no_policy)
    assert any("Deployment/mistral-7b: no NetworkPolicy selects these GPU pods" in m for m in found)


def test_references_of_routes_pools_and_monitors() -> None:
    docs = copy.deepcopy(pairs(everything(DEPLOYABLE[0])))
    by = {(d["kind"], d.get("metadata", {}).get("name", "-")): d for _, d in docs}
    by[("HTTPRoute", "chat-prod-gateway")]["spec"]["rules"][0]["backendRefs"][0]["port"] = 9999
    by[("InferencePool", "llama-8b")]["spec"]["endpointPickerRef"]["name"] = "missing-epp"
    by[("ServiceMonitor", "mistral-7b")]["spec"]["selector"]["matchLabels"] = {"app": "x"}
    found = messages(docs)
    assert any(
        "HTTPRoute/chat-prod-gateway: backendRef Service/chat-prod-gateway has no port 9999" in m
        for m in found
    )
    assert any(
        "InferencePool/llama-8b: endpointPickerRef Service/missing-epp is not in these manifests"
        in m
        for m in found
    )
    assert any(
        "ServiceMonitor/mistral-7b: selector {'app': 'x'} matches no Service" in m for m in found
    )
