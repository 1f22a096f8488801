"""Engines scaled on their queue by KEDA, the target taken from the planner's capacity.

Why KEDA rather than an HPA on external metrics: the HPA needs a metrics adapter
(prometheus-adapter) whose cluster-wide rules must map each engine's Prometheus series to an
external metric, configured outside these manifests; a KEDA ScaledObject carries its PromQL
query itself, creates and owns the HPA, and can hold the replica count when Prometheus is
unreachable (`fallback`). The target: the in-flight requests (running + waiting) one replica
holds at the planner's capacity within the SLO (Little's law: capacity x mean latency there),
so the desired count is ceil(fleet-wide in-flight / that), the replicas the plan asks for at
the same load.
"""

from __future__ import annotations

from modelyard.deploy.k8s import sizing
from modelyard.deploy.k8s.engine import EngineRender, Scope
from modelyard.deploy.k8s.objects import Doc, metadata
from modelyard.deploy.k8s.options import ReplicaBounds


def pod_pattern(render: EngineRender) -> str:
    """A PromQL regex matching exactly this workload's pod names."""
    if render.kind == "StatefulSet":
        return f"{render.service}-[0-9]+"
    return f"{render.service}-[a-z0-9]+-[a-z0-9]+"  # <deployment>-<replicaset hash>-<suffix>


def in_flight_query(scope: Scope, render: EngineRender) -> str:
    """Running plus waiting requests over all of one model's pods."""
    names = render.adapter.metric_names
    where = f'{{namespace="{scope.namespace}",pod=~"{pod_pattern(render)}"}}'
    return f"sum({names['running']}{where}) + sum({names['waiting']}{where})"


def scaled_object(scope: Scope, render: EngineRender, bounds: ReplicaBounds) -> Doc:
    meta = metadata(render.service, render.pod_labels, scope.namespace)
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": sizing.SCALE_DOWN_STABILIZATION_S,
            "policies": [
                {
                    "type": "Pods",
                    "value": sizing.SCALE_DOWN_PODS_PER_PERIOD,
                    "periodSeconds": sizing.SCALE_DOWN_PERIOD_S,
                }
            ],
        }
    }
    trigger = {
        "type": "prometheus",
        "name": "in-flight",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": scope.options.prometheus_url,
            "query": in_flight_query(scope, render),
            "threshold": f"{bounds.in_flight_per_replica:.2f}",
        },
    }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            **meta,
            "annotations": {
                "modelyard.dev/capacity": (
                    f"{bounds.capacity_rps:.3g} req/s per replica within the SLO "
                    f"({bounds.source}); {bounds.in_flight_per_replica:.1f} in flight at that rate"
                )
            },
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": render.kind,
                "name": render.service,
            },
            "minReplicaCount": bounds.min_replicas,
            "maxReplicaCount": bounds.max_replicas,
            "pollingInterval": sizing.AUTOSCALE_POLLING_S,
            "fallback": {
                "failureThreshold": sizing.METRICS_FAILURE_THRESHOLD,
                "replicas": bounds.min_replicas,
                "behavior": "currentReplicasIfHigher",
            },
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
            "triggers": [trigger],
        },
    }
