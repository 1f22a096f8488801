"""Render a fleet as Kubernetes manifests (`modelyard deploy k8s`).

Pure renderers by concept — sharing (where each model runs), engine, autoscaling, gateway,
network, gatewayapi, monitoring — composed by render.py; sizing.py names every number they
use; inputs.py and output.py are the edges that read and write files. docs/deploy.md explains
each choice; `modelyard.deploy.validate` checks the result.
"""

from modelyard.deploy.k8s.inputs import read_inputs
from modelyard.deploy.k8s.objects import k8s_name
from modelyard.deploy.k8s.options import (
    NODE_LABEL_KEYS,
    ParentGateway,
    RenderInputs,
    RenderOptions,
    ReplicaBounds,
)
from modelyard.deploy.k8s.output import dump, write
from modelyard.deploy.k8s.render import Rendered, render

__all__ = [
    "NODE_LABEL_KEYS",
    "ParentGateway",
    "RenderInputs",
    "RenderOptions",
    "Rendered",
    "ReplicaBounds",
    "dump",
    "k8s_name",
    "read_inputs",
    "render",
    "write",
]
