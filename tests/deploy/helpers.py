"""Shared by the deploy tests: render a fleet file, look documents up, validate."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from modelyard.deploy import k8s
from modelyard.deploy.validate import check_documents
from modelyard.fleet import LoadedFleet, load_fleet

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "k8s"
DEPLOYABLE = [*sorted(EXAMPLES.glob("*.yaml")), ROOT / "examples" / "fleet.yaml"]
FIXTURES = Path(__file__).parent / "fixtures"

Doc = dict[str, Any]
# sizing as the CLI would hand it over, without simulating: (min, max, in flight per replica)
BOUNDS = k8s.ReplicaBounds(2, 6, 19.5, 2.5, "given (--capacity)")


def render_fleet(
    loaded: LoadedFleet, bounds: dict[str, k8s.ReplicaBounds] | None = None, **options: Any
) -> k8s.Rendered:
    return k8s.render(loaded, k8s.read_inputs(loaded, bounds), k8s.RenderOptions(**options))


@functools.cache
def example(name: str) -> LoadedFleet:
    return load_fleet(EXAMPLES / name)


def rendered(
    name: str, bounds: dict[str, k8s.ReplicaBounds] | None = None, **options: Any
) -> k8s.Rendered:
    return render_fleet(example(name), bounds, **options)


@functools.cache
def everything(path: Path) -> k8s.Rendered:
    """A fleet rendered with every option on: autoscalers, Gateway API, ServiceMonitors."""
    loaded = load_fleet(path)
    isolated = [m for m in loaded.fleet.models if loaded.fleet.group_of(m) is None]
    return render_fleet(
        loaded,
        dict.fromkeys(isolated, BOUNDS),
        gateway_api=k8s.ParentGateway("inference-gw", "infra"),
        service_monitor=True,
        gateway_hpa=True,
    )


def pairs(result: k8s.Rendered) -> list[tuple[str, Doc]]:
    return [(f, d) for f, docs in result.all_files().items() for d in docs]


def find(result: k8s.Rendered, kind: str, name: str) -> Doc:
    return next(d for _, d in pairs(result) if d["kind"] == kind and d["metadata"]["name"] == name)


def kinds(result: k8s.Rendered) -> list[str]:
    return [d["kind"] for _, d in pairs(result)]


def pod_spec(result: k8s.Rendered, kind: str, name: str) -> Doc:
    return find(result, kind, name)["spec"]["template"]["spec"]


def engine(result: k8s.Rendered, kind: str, name: str) -> Doc:
    return pod_spec(result, kind, name)["containers"][0]


def arg(container: Doc, flag: str) -> str:
    args = container["args"]
    return str(args[args.index(flag) + 1])


def messages(docs: list[tuple[str, Doc]]) -> list[str]:
    return [str(f) for f in check_documents(docs)]


def node_terms(spec: Doc) -> list[Doc]:
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return list(required["nodeSelectorTerms"][0]["matchExpressions"])
