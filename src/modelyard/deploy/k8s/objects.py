"""Names, labels, metadata and image references: the vocabulary every renderer shares."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from modelyard.deploy.errors import DeployError

Doc = dict[str, Any]

MANAGED_BY = "modelyard"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
ENGINE_LABEL = "modelyard.dev/engine"
# reference grammar of distribution/reference, simplified: [registry/]path[:tag][@digest]
_IMAGE = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)"
    r"[a-z0-9]+)*)*)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def k8s_name(text: str, limit: int = 63) -> str:
    """An RFC 1035 label from a fleet name: lower case, '-' for anything else, starts with a
    letter, at most `limit` characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}"
    return name[:limit].rstrip("-")


def label_value(text: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return value.strip("-_.") or "unknown"


def quantity_gib(value_gib: float) -> str:
    """A memory quantity in whole GiB, rounded up, at least 1Gi."""
    return f"{max(math.ceil(value_gib), 1)}Gi"


@dataclass(frozen=True)
class ImageRef:
    """A container image reference; `digest` pins it to one image for good."""

    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str, where: str) -> ImageRef:
        match = _IMAGE.match(text)
        if match is None:
            raise DeployError(
                f"{where}: '{text}' is not an image reference (REPOSITORY[:TAG][@sha256:DIGEST])"
            )
        tag, digest = match.group("tag"), match.group("digest")
        if tag is None and digest is None:
            raise DeployError(
                f"{where}: '{text}' names no tag or digest, so it floats with `latest`; pin it "
                "(REPOSITORY:TAG or REPOSITORY@sha256:DIGEST)"
            )
        return cls(match.group("repository"), tag, digest)

    def __str__(self) -> str:
        return (
            self.repository
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )

    @property
    def version(self) -> str:
        """What the `app.kubernetes.io/version` label says: the tag, else the digest's start."""
        if self.tag:
            return label_value(self.tag)
        return label_value(str(self.digest).replace(":", "-")[:19])


def labels(fleet_name: str, name: str, component: str, version: str) -> dict[str, str]:
    return {
        NAME_LABEL: label_value(name),
        INSTANCE_LABEL: k8s_name(f"{fleet_name}-{name}"),
        COMPONENT_LABEL: component,
        PART_OF_LABEL: k8s_name(fleet_name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": label_value(version),
    }


def selector(pod_labels: dict[str, str]) -> dict[str, str]:
    """The labels that pick one component's pods (stable across versions)."""
    return {k: pod_labels[k] for k in (NAME_LABEL, INSTANCE_LABEL)}


def metadata(name: str, object_labels: dict[str, str], namespace: str | None) -> Doc:
    meta: Doc = {"name": name, "labels": object_labels}
    if namespace:
        meta["namespace"] = namespace
    return meta
