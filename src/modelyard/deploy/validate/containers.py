"""What the schemas cannot see in a workload: the mistakes that break LLM engines on
Kubernetes (each message says what goes wrong in a cluster; docs/deploy.md cites the reports)."""

from __future__ import annotations

from modelyard.deploy.validate.documents import (
    GPU_RESOURCE,
    QUANTITY,
    Doc,
    Docs,
    containers,
    gpu_keys,
    name_of,
    pod_labels,
    pod_spec,
    quantities,
)


def _check_gpu(name: str, resources: Doc) -> list[str]:
    out: list[str] = []
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    for key in sorted(gpu_keys(resources)):
        if not GPU_RESOURCE.match(key):
            out.append(
                f"container {name}: '{key}' is not a resource any device plugin advertises; "
                "request nvidia.com/gpu (or nvidia.com/mig-<profile>, amd.com/gpu) and choose "
                "the GPU type with node affinity on nvidia.com/gpu.product"
            )
        if key not in limits:
            out.append(f"container {name}: GPU resource {key} must be set in limits")
        elif key in requests and str(requests[key]) != str(limits[key]):
            out.append(
                f"container {name}: GPU resource {key}: requests ({requests[key]}) must equal "
                f"limits ({limits[key]}); extended resources cannot be overcommitted"
            )
    return out


def _check_probes(name: str, container: Doc) -> list[str]:
    out: list[str] = []
    ports = container.get("ports") or []
    numbers = {p.get("containerPort") for p in ports}
    names = {p.get("name") for p in ports if p.get("name")}
    for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_kind) or {}
        for handler in ("httpGet", "tcpSocket", "grpc"):
            port = (probe.get(handler) or {}).get("port")
            if port is None:
                continue
            known = port in names if isinstance(port, str) else port in numbers
            if not known:
                out.append(
                    f"container {name}: {probe_kind} uses port {port!r}, which the container "
                    f"does not declare (ports: {sorted(map(str, numbers | names)) or 'none'})"
                )
    return out


def _check_engine(name: str, container: Doc, volumes: dict[str, Doc]) -> list[str]:
    out: list[str] = []
    if not container.get("startupProbe"):
        out.append(
            f"container {name}: a GPU engine needs a startupProbe sized to its load time; "
            "without one the liveness probe kills the pod while the model loads"
        )
    shm = any(
        m.get("mountPath") == "/dev/shm"
        and (volumes.get(m.get("name", "")) or {}).get("emptyDir", {}).get("medium") == "Memory"
        for m in container.get("volumeMounts") or []
    )
    if not shm:
        out.append(
            f"container {name}: no memory-backed /dev/shm (emptyDir medium Memory); the "
            "container runtime's 64 MB default breaks the engine's shared-memory IPC/NCCL"
        )
    return out


def check_container(container: Doc, volumes: dict[str, Doc]) -> list[str]:
    name = container.get("name", "?")
    resources = container.get("resources") or {}
    out = quantities(f"container {name} requests", resources.get("requests"))
    out += quantities(f"container {name} limits", resources.get("limits"))
    out += _check_gpu(name, resources)
    out += _check_probes(name, container)
    if gpu_keys(resources):
        out += _check_engine(name, container, volumes)
    image = str(container.get("image", ""))
    last = image.rsplit("/", 1)[-1]
    if "@" not in image and (":" not in last or last.endswith(":latest")):
        out.append(
            f"container {name}: image '{image}' floats (no tag, or `latest`): every node may "
            "pull a different build; pin a tag or a digest (@sha256:...)"
        )
    return out


def rwo_claims(docs: Docs) -> set[str]:
    return {
        name_of(d)
        for _, d in docs
        if d.get("kind") == "PersistentVolumeClaim"
        and {"ReadWriteOnce", "ReadWriteOncePod"}
        & set((d.get("spec") or {}).get("accessModes") or [])
    }


def _check_claims(doc: Doc, volumes: dict[str, Doc], rwo: set[str]) -> list[str]:
    spec = doc.get("spec") or {}
    claims = {
        str((v.get("persistentVolumeClaim") or {}).get("claimName")) for v in volumes.values()
    } & rwo
    if not claims:
        return []
    out = []
    strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
    if strategy != "Recreate":
        out.append(
            f"mounts ReadWriteOnce volume {sorted(claims)[0]} with a {strategy} update: the "
            "new pod cannot attach it while the old one runs (Multi-Attach error); use "
            "strategy Recreate or a StatefulSet"
        )
    if int(spec.get("replicas", 1)) > 1:
        out.append(
            f"{spec.get('replicas')} replicas share ReadWriteOnce volume {sorted(claims)[0]}:"
            " pods on other nodes fail with Multi-Attach; use a StatefulSet with "
            "volumeClaimTemplates or a ReadWriteMany volume"
        )
    return out


def check_workload(doc: Doc, rwo: set[str]) -> list[str]:
    out: list[str] = []
    spec = doc.get("spec") or {}
    template_labels = pod_labels(doc)
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    if doc.get("kind") != "Job":
        wrong = {k: v for k, v in match.items() if template_labels.get(k) != v}
        if wrong or not match:
            out.append(
                f"selector {match} does not match the pod template's labels {template_labels}"
                if match
                else "selector.matchLabels is empty"
            )
    volumes = {v.get("name", ""): v for v in pod_spec(doc).get("volumes") or []}
    for volume in volumes.values():
        limit = (volume.get("emptyDir") or {}).get("sizeLimit")
        if limit is not None and not QUANTITY.match(str(limit)):
            out.append(f"volume {volume.get('name')}: sizeLimit '{limit}' is not a quantity")
    for container in containers(pod_spec(doc)):
        out += check_container(container, volumes)
    for template_claim in spec.get("volumeClaimTemplates") or []:
        storage = ((template_claim.get("spec") or {}).get("resources") or {}).get("requests")
        out += quantities("volumeClaimTemplates requests", storage)
    if doc.get("kind") == "Deployment":
        out += _check_claims(doc, volumes, rwo)
    return out
