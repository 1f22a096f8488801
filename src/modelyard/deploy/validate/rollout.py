"""Rollouts, scale-downs and drains that drop no stream, and replicas that survive a node drain.

The order the checks hold the manifests to: a terminating pod leaves Service endpoints and DNS
at once, preStop sleeps while proxies catch up, SIGTERM starts the process's own drain (the
gateway's `--grace`, an engine's `--shutdown-timeout`), and the kubelet's SIGKILL at
terminationGracePeriodSeconds comes after all of it; new pods serve only once ready; the
gateway's drain covers the longest request its fleet allows (`policy.timeouts.total`).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from modelyard.deploy.validate.documents import (
    HOSTNAME,
    Doc,
    Docs,
    containers,
    find,
    flag_value,
    matches,
    name_of,
    pod_labels,
    pod_spec,
    pre_stop_sleep_s,
    workloads,
)
from modelyard.fleet import Timeouts
from modelyard.units import parse_duration

MIN_DRAIN_S = 5  # endpoint removal reaching every proxy takes seconds, not zero
DEFAULT_GRACE_S = 30  # terminationGracePeriodSeconds when unset
AUTOSCALERS = ("ScaledObject", "HorizontalPodAutoscaler")
# a process's own drain after SIGTERM: modelyard gateway, vLLM >= 0.18, the endpoint picker
DRAIN_FLAGS = ("--grace", "--shutdown-timeout", "--drain-timeout")


def _served(doc: Doc, docs: Docs) -> bool:
    """Some Service sends traffic to this workload's pods."""
    labels = pod_labels(doc)
    return any(
        d.get("kind") == "Service" and matches((d.get("spec") or {}).get("selector") or {}, labels)
        for _, d in docs
    )


def _own_drain_s(container: Doc) -> tuple[float, str] | None:
    """How long the process drains after SIGTERM, and what says so."""
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    for flag in DRAIN_FLAGS:
        value = flag_value(argv, flag)
        if value is not None:
            try:
                return parse_duration(
                    value if value[-1:].isalpha() else float(value)
                ), f"{flag} {value}"
            except ValueError:
                return None
    return None


def _fleet_total_s(doc: Doc, docs: Docs) -> float | None:
    """policy.timeouts.total of the fleet file a `modelyard gateway` pod mounts."""
    for volume in pod_spec(doc).get("volumes") or []:
        config = find(docs, "ConfigMap", str((volume.get("configMap") or {}).get("name")))
        text = ((config or {}).get("data") or {}).get("fleet.yaml")
        if text is None:
            continue
        data: Any = yaml.safe_load(text) or {}
        total = ((data.get("policy") or {}).get("timeouts") or {}).get("total")
        return Timeouts().total if total is None else parse_duration(total)
    return None


def drain_findings(doc: Doc, docs: Docs) -> list[str]:
    spec = pod_spec(doc)
    grace = int(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S))
    served = _served(doc, docs)
    out: list[str] = []
    for container in containers(spec):
        name = container.get("name", "?")
        sleep = pre_stop_sleep_s(container) or 0
        own = _own_drain_s(container)
        drain = own[0] if own else 0.0
        if grace < sleep + drain:
            what = f" + {own[1]}" if own else ""
            out.append(
                f"container {name}: terminationGracePeriodSeconds {grace} < preStop {sleep} s"
                f"{what}: the kubelet kills it before it has drained"
            )
        if not served or container in (spec.get("initContainers") or []):
            continue
        if not container.get("readinessProbe"):
            out.append(
                f"container {name}: serves a Service but has no readinessProbe, so it takes "
                "traffic before it can answer and rollouts cannot wait for it"
            )
        managed = (doc.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/managed-by")
        keeps_serving = sleep if own is None or own[1].startswith("--grace") else max(sleep, drain)
        if managed == "modelyard" and keeps_serving < MIN_DRAIN_S:
            out.append(
                f"container {name}: serves only {keeps_serving:g} s after it starts terminating "
                f"(preStop sleep, or its own --drain-timeout; < {MIN_DRAIN_S}): it stops while "
                "proxies still send it new requests"
            )
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if argv[:2] == ["modelyard", "gateway"]:
            total = _fleet_total_s(doc, docs)
            if total is not None and drain < total:
                out.append(
                    f"container {name}: gateway --grace {drain:g} s is shorter than its fleet's "
                    f"policy.timeouts.total {total:g} s: a rollout cuts the longest streams"
                )
    return out


def _max_unavailable(doc: Doc, replicas: int | None) -> int | None:
    """Pods a RollingUpdate may take down before their replacements are ready (None: unknown)."""
    strategy = (doc.get("spec") or {}).get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, int):
        return value
    if replicas is None:
        return None if str(value) != "0%" else 0
    return math.floor(replicas * float(str(value).rstrip("%")) / 100)


def _autoscaler_of(doc: Doc, docs: Docs) -> Doc | None:
    for _, other in docs:
        target = (other.get("spec") or {}).get("scaleTargetRef") or {}
        same = target.get("name") == name_of(doc) and target.get("kind", "Deployment") == doc.get(
            "kind"
        )
        if other.get("kind") in AUTOSCALERS and same:
            return other
    return None


def _most_replicas(doc: Doc, scaler: Doc | None) -> int:
    spec = (scaler or {}).get("spec") or {}
    most = spec.get("maxReplicaCount", spec.get("maxReplicas"))
    return int(most) if most is not None else int((doc.get("spec") or {}).get("replicas", 1))


def _spread_by_node(spec: Doc) -> bool:
    if any(c.get("topologyKey") == HOSTNAME for c in spec.get("topologySpreadConstraints") or []):
        return True
    anti = (spec.get("affinity") or {}).get("podAntiAffinity") or {}
    required = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []
    preferred = [
        p.get("podAffinityTerm") or {}
        for p in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    ]
    return any(term.get("topologyKey") == HOSTNAME for term in [*required, *preferred])


def availability_findings(doc: Doc, docs: Docs) -> list[str]:
    out: list[str] = []
    scaler = _autoscaler_of(doc, docs)
    replicas = (doc.get("spec") or {}).get("replicas")
    if scaler is not None and replicas is not None:
        out.append(
            f"sets replicas: {replicas} while {scaler['kind']}/{name_of(scaler)} owns the count: "
            "every `kubectl apply` resets what the autoscaler chose"
        )
    most = _most_replicas(doc, scaler)
    if doc.get("kind") == "Deployment" and _served(doc, docs):
        unavailable = _max_unavailable(doc, None if scaler else int(replicas or 1))
        if unavailable:
            out.append(
                f"RollingUpdate maxUnavailable {unavailable}: a rollout stops serving pods "
                "before their replacements are ready; use maxUnavailable 0 (maxSurge 1)"
            )
    if most < 2 or doc.get("kind") not in ("Deployment", "StatefulSet"):
        return out
    labels = pod_labels(doc)
    budget = any(
        d.get("kind") == "PodDisruptionBudget"
        and matches(((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}, labels)
        for _, d in docs
    )
    if not budget:
        out.append(
            f"up to {most} replicas but no PodDisruptionBudget: a node drain may evict them all "
            "at once"
        )
    if not _spread_by_node(pod_spec(doc)):
        out.append(
            f"up to {most} replicas with no topology spread or anti-affinity on {HOSTNAME}: "
            "they may share a node, and one node failure takes them all"
        )
    return out


def dangling_autoscaler(doc: Doc, docs: Docs) -> list[str]:
    """An autoscaler whose target is not among the manifests."""
    target = (doc.get("spec") or {}).get("scaleTargetRef") or {}
    kind = target.get("kind", "Deployment")
    if not any(d.get("kind") == kind and name_of(d) == target.get("name") for d in workloads(docs)):
        return [f"scaleTargetRef {kind}/{target.get('name')} is not in these manifests"]
    return []
