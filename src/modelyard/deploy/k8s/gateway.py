"""The gateway: its fleet file (the user's, endpoints pointing at the engines' headless
Services), Deployment, Service, disruption budget and optional CPU autoscaler.

Shutdown order, so a rollout drops no stream: the pod turns Terminating and leaves the Service
endpoints at once; preStop sleeps `drain_seconds` while load balancers and kube-proxy catch up
(requests still arriving are served); SIGTERM then makes `modelyard gateway` stop accepting and
wait up to `--grace` = the fleet's total request timeout for streams in flight; the kubelet's
SIGKILL comes only after preStop + grace + a margin. New pods take traffic only once ready
(maxUnavailable 0), and `deploy validate` checks these numbers against each other.
"""

from __future__ import annotations

import copy
import hashlib
import math
from typing import Any

import yaml

from modelyard import __version__
from modelyard.deploy.k8s import sizing
from modelyard.deploy.k8s.engine import Scope
from modelyard.deploy.k8s.objects import Doc, ImageRef, k8s_name, labels, metadata, selector
from modelyard.deploy.k8s.options import RenderInputs
from modelyard.deploy.k8s.security import (
    GATEWAY_UID,
    container_security,
    pod_security,
    writable_scratch,
)
from modelyard.deploy.k8s.spread import disruption_budget, pod_spread

CONFIG_DIR = "/etc/modelyard"
PORT_NAME = "http"


def gateway_name(fleet_name: str) -> str:
    return k8s_name(f"{fleet_name}-gateway")


def gateway_fleet(scope: Scope, inputs: RenderInputs, endpoints: dict[str, str]) -> dict[str, str]:
    """The files of the gateway's ConfigMap: the fleet file as the user wrote it, each model's
    `endpoints` set to its headless Service (and its `replicas` dropped: the workload or the
    autoscaler owns the count), plus the extra catalogs it names."""
    data: dict[str, Any] = copy.deepcopy(inputs.fleet_data)
    for name, url in endpoints.items():
        entry = data["models"][name]
        entry["endpoints"] = [url]
        entry.pop("replicas", None)
    files = dict(inputs.catalog_files)
    if files:
        data["catalog"] = list(files)
    header = (
        f"# Rendered by modelyard {__version__} from {scope.loaded.path.name}: endpoints point "
        "at the models' headless Services.\n"
    )
    files["fleet.yaml"] = header + yaml.safe_dump(data, sort_keys=False)
    return files


def _pod(scope: Scope, name: str, pod_labels: dict[str, str], digest: str, image: str) -> Doc:
    options = scope.options
    fleet = scope.loaded.fleet
    grace_s = math.ceil(fleet.policy.timeouts.total)
    probe = {
        "httpGet": {"path": "/health", "port": PORT_NAME},
        "timeoutSeconds": sizing.GATEWAY_PROBE_TIMEOUT_S,
    }
    volumes, mounts = writable_scratch(home=False)
    container: Doc = {
        "name": "gateway",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["modelyard"],
        "args": [
            "gateway",
            f"{CONFIG_DIR}/fleet.yaml",
            "--host",
            "0.0.0.0",
            "--port",
            str(sizing.GATEWAY_PORT),
            "--grace",
            str(grace_s),
        ],
        "ports": [{"name": PORT_NAME, "containerPort": sizing.GATEWAY_PORT}],
        "env": [
            {
                "name": fleet.gateway.api_key_hashes_env,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": k8s_name(f"{fleet.name}-api-keys"),
                        "key": "hashes",
                        "optional": True,
                    }
                },
            }
        ],
        "resources": {
            "requests": {
                "cpu": sizing.GATEWAY_CPU_REQUEST,
                "memory": sizing.GATEWAY_MEMORY_REQUEST,
            },
            "limits": {"cpu": sizing.GATEWAY_CPU_LIMIT, "memory": sizing.GATEWAY_MEMORY_LIMIT},
        },
        "readinessProbe": {
            **probe,
            "periodSeconds": sizing.GATEWAY_READINESS_PERIOD_S,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            **probe,
            "periodSeconds": sizing.GATEWAY_LIVENESS_PERIOD_S,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(options.drain_seconds)]}}},
        "securityContext": container_security(),
        "volumeMounts": [{"name": "fleet", "mountPath": CONFIG_DIR, "readOnly": True}, *mounts],
    }
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(sizing.GATEWAY_PORT),
        "prometheus.io/path": "/metrics",
        "modelyard.dev/config-sha256": digest,  # a new fleet file rolls the pods
    }
    spec: Doc = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "priorityClassName": scope.priority_class,
        "terminationGracePeriodSeconds": sizing.termination_grace_s(options.drain_seconds, grace_s),
        "securityContext": pod_security(GATEWAY_UID),
        "topologySpreadConstraints": pod_spread(selector(pod_labels), strict=False),
        "containers": [container],
        "volumes": [{"name": "fleet", "configMap": {"name": name}}, *volumes],
    }
    return {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": spec}


def gateway_docs(scope: Scope, inputs: RenderInputs, endpoints: dict[str, str]) -> list[Doc]:
    options = scope.options
    fleet = scope.loaded.fleet
    name = gateway_name(fleet.name)
    image = ImageRef.parse(options.gateway_image, "--gateway-image")
    pod_labels = labels(fleet.name, "gateway", "gateway", image.version)
    pod_selector = selector(pod_labels)
    config_files = gateway_fleet(scope, inputs, endpoints)
    digest = hashlib.sha256(
        "\n".join(f"{k}\n{v}" for k, v in sorted(config_files.items())).encode()
    ).hexdigest()[:16]
    meta = metadata(name, pod_labels, scope.namespace)
    deployment_spec: Doc = {
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "selector": {"matchLabels": pod_selector},
        "template": _pod(scope, name, pod_labels, digest, str(image)),
    }
    if not options.gateway_hpa:  # with --hpa the autoscaler owns the count
        deployment_spec = {"replicas": options.gateway_replicas, **deployment_spec}
    port = {"name": PORT_NAME, "port": sizing.GATEWAY_PORT, "targetPort": PORT_NAME}
    docs: list[Doc] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": config_files},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": deployment_spec},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"type": "ClusterIP", "selector": pod_selector, "ports": [port]},
        },
        disruption_budget(meta, pod_selector),
    ]
    if options.gateway_hpa:
        target = {"type": "Utilization", "averageUtilization": sizing.GATEWAY_HPA_CPU_PERCENT}
        docs.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": meta,
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": options.gateway_replicas,
                    "maxReplicas": options.gateway_replicas * sizing.GATEWAY_HPA_MAX_FACTOR,
                    "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": target}}
                    ],
                },
            }
        )
    return docs
