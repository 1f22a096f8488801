"""The edge of rendering on the way out: YAML text, files in a directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelyard.deploy.errors import DeployError
from modelyard.deploy.k8s.objects import Doc
from modelyard.deploy.k8s.render import Rendered


class _Dumper(yaml.SafeDumper):
    """No anchors/aliases: each manifest reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # multi-line strings (files in ConfigMaps) as literal blocks, readable in the manifest
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _text)


def dump(docs: list[Doc]) -> str:
    """One YAML stream: documents separated by `---`."""
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=100) for d in docs)


def write(rendered: Rendered, directory: Path) -> list[Path]:
    """Write every file (node configuration under node-config/); returns the paths."""
    if directory.exists() and not directory.is_dir():
        raise DeployError(f"{directory}: exists and is not a directory; -o takes a directory")
    written = []
    for name, docs in rendered.all_files().items():
        path = directory / name
        partial = path.with_name(path.name + ".partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(dump(docs))
            partial.replace(path)
        except OSError as exc:
            raise DeployError(f"{path}: cannot write ({exc.strerror})") from exc
        written.append(path)
    return written
