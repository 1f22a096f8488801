"""The edge of rendering: read what the pure renderers need from files, once."""

from __future__ import annotations

from pathlib import Path

from modelyard.deploy.errors import DeployError
from modelyard.deploy.k8s.options import RenderInputs, ReplicaBounds
from modelyard.errors import ConfigError
from modelyard.fleet import LoadedFleet
from modelyard.yamlsource import load_yaml


def read_inputs(
    loaded: LoadedFleet,
    bounds: dict[str, ReplicaBounds] | None = None,
    notes: tuple[str, ...] = (),
) -> RenderInputs:
    """The fleet file as written and the extra catalog files it names (the gateway's copy),
    plus the autoscaling bounds computed by the caller."""
    try:
        data = load_yaml(loaded.path).data
    except ConfigError as exc:
        raise DeployError(f"{loaded.path}: cannot read the fleet file again ({exc})") from exc
    catalogs: dict[str, str] = {}
    for index, path in enumerate(data.get("catalog") or []):
        source = loaded.path.parent / path
        try:
            catalogs[f"catalog-{index}-{Path(path).name}"] = source.read_text()
        except OSError as exc:
            raise DeployError(f"{source}: cannot read catalog file ({exc.strerror})") from exc
    return RenderInputs(fleet_data=data, catalog_files=catalogs, bounds=bounds or {}, notes=notes)
