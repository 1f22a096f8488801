"""`modelyard deploy k8s | validate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from modelyard import __version__
from modelyard.cli.common import (
    CatalogOption,
    K8sVersionOption,
    app,
    err_console,
    parse_key_values,
)
from modelyard.errors import ModelyardError
from modelyard.fleet import load_fleet

deploy_app = typer.Typer(
    help="Kubernetes manifests for the fleet, validated offline.", no_args_is_help=True
)
app.add_typer(deploy_app, name="deploy")


def _print_findings(findings: list[Any]) -> None:
    for finding in findings:
        err_console.print(f"[red]invalid:[/] {finding}", markup=True)


@deploy_app.command("k8s")
def deploy_k8s_command(
    fleet: Annotated[Path, typer.Argument(help="Fleet file.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Directory to write the manifests to.")
    ] = None,
    stdout: Annotated[
        bool, typer.Option("--stdout", help="Print what `kubectl apply -f -` takes instead.")
    ] = False,
    namespace: Annotated[
        str | None, typer.Option(help="Namespace of every object (default: the fleet's name).")
    ] = None,
    namespace_object: Annotated[
        bool,
        typer.Option(help="Render the Namespace (Pod Security restricted) as well."),
    ] = True,
    k8s_version: K8sVersionOption = "1.30",
    node_label: Annotated[
        str, typer.Option(help="GPU node label scheme: nvidia (gpu.product) or gke.")
    ] = "nvidia",
    workload: Annotated[
        str,
        typer.Option(help="auto (StatefulSet for replicas), deployment or statefulset."),
    ] = "auto",
    cache_access_mode: Annotated[
        str, typer.Option(help="Model cache volume: ReadWriteOnce or ReadWriteMany.")
    ] = "ReadWriteOnce",
    storage_class: Annotated[str | None, typer.Option(help="StorageClass of the cache.")] = None,
    load_bandwidth: Annotated[
        float, typer.Option(min=1, help="MB/s assumed for the first weights download.")
    ] = 100.0,
    image: Annotated[
        list[str] | None,
        typer.Option(help="ENGINE=IMAGE: another engine image, e.g. pinned by @sha256 digest."),
    ] = None,
    gateway_image: Annotated[
        str, typer.Option(help="Gateway container image (build it from the Dockerfile).")
    ] = f"modelyard:{__version__}",
    gateway_replicas: Annotated[int, typer.Option(min=1, help="Gateway replicas.")] = 2,
    hpa: Annotated[
        bool, typer.Option("--hpa", help="Scale the gateway on CPU (HorizontalPodAutoscaler).")
    ] = False,
    autoscale: Annotated[
        str, typer.Option(help="Engines: keda (ScaledObject from the plan) or none.")
    ] = "keda",
    capacity: Annotated[
        list[str] | None,
        typer.Option(help="MODEL=RPS per replica within the SLO, instead of simulating it."),
    ] = None,
    prometheus_url: Annotated[
        str, typer.Option(help="Prometheus the autoscaler queries.")
    ] = "http://prometheus-operated.monitoring.svc:9090",
    prometheus_namespace: Annotated[
        str, typer.Option(help="Namespace Prometheus scrapes from (NetworkPolicy).")
    ] = "monitoring",
    service_monitor: Annotated[
        bool, typer.Option("--service-monitor", help="Add Prometheus Operator ServiceMonitors.")
    ] = False,
    client_namespace: Annotated[
        list[str] | None,
        typer.Option(help="Namespace allowed to call the gateway (repeatable; default: any)."),
    ] = None,
    priority_class: Annotated[
        str | None,
        typer.Option(help="An existing PriorityClass (default: render <fleet>-serving)."),
    ] = None,
    gateway_api: Annotated[
        str | None,
        typer.Option(
            help="[NAMESPACE/]GATEWAY[:LISTENER]: add an HTTPRoute to it and InferencePools."
        ),
    ] = None,
    catalog: CatalogOption = None,
) -> None:
    """Render one runtime per model (shared groups exactly as the fleet's `sharing:` says),
    autoscalers sized from the plan, the gateway, network policies and a kustomization.yaml;
    every document is validated before anything is written."""
    from modelyard.deploy import k8s
    from modelyard.deploy.errors import DeployError
    from modelyard.deploy.validate import check_documents
    from modelyard.plan.replicas import size_replicas

    if (output is None) == (not stdout):
        raise ModelyardError("give exactly one of -o DIR or --stdout")
    choices = {
        "--node-label": (node_label, tuple(k8s.NODE_LABEL_KEYS)),
        "--workload": (workload, ("auto", "deployment", "statefulset")),
        "--cache-access-mode": (cache_access_mode, ("ReadWriteOnce", "ReadWriteMany")),
        "--autoscale": (autoscale, ("keda", "none")),
    }
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise ModelyardError(f"{flag} {value}: choose one of {', '.join(allowed)}")
    images: dict[str, str] = {}
    for item in image or []:
        engine, sep, ref = item.partition("=")
        if not sep or not engine or not ref:
            raise ModelyardError(f"--image {item}: expected ENGINE=IMAGE")
        images[engine] = ref
    parent = None
    if gateway_api is not None:
        where, _, section = gateway_api.partition(":")
        gw_namespace, _, gw_name = where.rpartition("/")
        if not gw_name:
            raise ModelyardError(f"--gateway-api {gateway_api}: expected [NAMESPACE/]GATEWAY")
        parent = k8s.ParentGateway(gw_name, gw_namespace or None, section or None)
    loaded = load_fleet(fleet, catalog)
    bounds: dict[str, k8s.ReplicaBounds] = {}
    notes: list[str] = []
    isolated = [m for m in loaded.fleet.models if loaded.fleet.group_of(m) is None]
    if autoscale == "keda" and isolated:
        sizing, notes = size_replicas(loaded, isolated, parse_key_values("--capacity", capacity))
        bounds = {
            m: k8s.ReplicaBounds(
                s.min_replicas,
                s.max_replicas,
                s.in_flight_per_replica,
                s.capacity.rps,
                s.capacity.source,
            )
            for m, s in sizing.items()
        }
    options = k8s.RenderOptions(
        namespace=namespace,
        namespace_object=namespace_object,
        pod_security_version=f"v{k8s_version}",
        node_label=node_label,  # type: ignore[arg-type]
        workload=workload,  # type: ignore[arg-type]
        cache_access_mode=cache_access_mode,  # type: ignore[arg-type]
        storage_class=storage_class,
        load_bandwidth_bytes_s=load_bandwidth * 1e6,
        engine_images=images,
        gateway_image=gateway_image,
        gateway_replicas=gateway_replicas,
        gateway_hpa=hpa,
        autoscaler=autoscale,  # type: ignore[arg-type]
        prometheus_url=prometheus_url,
        prometheus_namespace=prometheus_namespace,
        service_monitor=service_monitor,
        client_namespaces=tuple(client_namespace or ()),
        priority_class=priority_class,
        gateway_api=parent,
    )
    rendered = k8s.render(loaded, k8s.read_inputs(loaded, bounds, tuple(notes)), options)
    docs = [(f, d) for f, ds in rendered.all_files().items() for d in ds]
    findings = check_documents(docs, k8s_version)
    if findings:
        _print_findings(findings)
        raise DeployError(f"{len(findings)} rendered documents failed validation (a modelyard bug)")
    for warning in rendered.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", markup=True)
    for name, b in bounds.items():
        capacity_text = f"{b.capacity_rps:.3g} req/s per replica within the SLO, {b.source}"
        if b.max_replicas > b.min_replicas:
            line = (
                f"autoscaling {name}: {b.min_replicas}-{b.max_replicas} replicas on "
                f"{b.in_flight_per_replica:.1f} requests in flight per replica ({capacity_text})"
            )
        else:
            line = (
                f"replicas {name}: {b.min_replicas}, no autoscaler: the peak needs no more "
                f"than the minimum ({capacity_text})"
            )
        err_console.print(line, markup=False)
    if stdout:
        stream = rendered.stream()
        sys.stdout.write(k8s.dump(stream))
        if rendered.node_config:
            err_console.print(
                "note: node-config/ (the GPU operator's configuration for shared groups) is "
                "not in this stream; write it with -o DIR",
                markup=False,
            )
        return
    assert output is not None
    for path in k8s.write(rendered, output):
        sys.stdout.write(f"wrote {path}\n")
    sys.stdout.write(
        f"{len(docs)} documents valid for Kubernetes {k8s_version} (strict, Pod Security "
        f"restricted); apply with: kubectl apply -k {output}\n"
    )


@deploy_app.command("validate")
def deploy_validate_command(
    directory: Annotated[Path, typer.Argument(help="Directory of manifests (recursively).")],
    k8s_version: K8sVersionOption = "1.30",
) -> None:
    """Validate manifests offline: official schemas (strict) plus LLM-serving checks."""
    from modelyard.deploy.errors import DeployError
    from modelyard.deploy.validate import check_directory, load_directory

    findings = check_directory(directory, k8s_version)
    if findings:
        _print_findings(findings)
        raise DeployError(f"{len(findings)} problems in {directory}")
    count = len(load_directory(directory))
    sys.stdout.write(f"{count} documents valid for Kubernetes {k8s_version} (strict)\n")
