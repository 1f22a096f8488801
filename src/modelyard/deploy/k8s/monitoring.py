"""Prometheus Operator ServiceMonitors for the engines' and the gateway's metrics (an option:
without the operator, the pods' prometheus.io/* annotations serve annotation-based scraping).

The KEDA queries select series by `namespace` and `pod`, labels both a ServiceMonitor and the
common annotation-based scrape job attach. Schema: Prometheus Operator v0.93.0, vendored.
"""

from __future__ import annotations

from modelyard.deploy.k8s.engine import PORT_NAME, Scope
from modelyard.deploy.k8s.objects import Doc, metadata, selector

SCRAPE_INTERVAL = "15s"


def service_monitor(scope: Scope, name: str, pod_labels: dict[str, str], metrics_path: str) -> Doc:
    endpoint = {"port": PORT_NAME, "path": metrics_path, "interval": SCRAPE_INTERVAL}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(name, pod_labels, scope.namespace),
        "spec": {
            "selector": {"matchLabels": selector(pod_labels)},
            "namespaceSelector": {"matchNames": [scope.namespace]},
            "endpoints": [endpoint],
        },
    }
