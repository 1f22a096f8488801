"""Hardening every pod meets: Pod Security "restricted", read-only root file systems.

Restricted (https://kubernetes.io/docs/concepts/security/pod-security-standards/) asks for
runAsNonRoot, no privilege escalation, every capability dropped and the RuntimeDefault seccomp
profile, and only ephemeral / claim / projected volume types. The engine images (vLLM, SGLang,
TGI, llama.cpp) declare no user, so they would start as root: the pod names a numeric UID,
which they run as as long as HOME and the caches point at writable volumes (set here and in
engine.py). The gateway image runs as UID 10001 (Dockerfile); the endpoint picker's as 65532.
"""

from __future__ import annotations

from modelyard.deploy.k8s.objects import Doc

ENGINE_UID = 1000
GATEWAY_UID = 10001  # `useradd --uid 10001` in the repository's Dockerfile
ENDPOINT_PICKER_UID = 65532  # USER 65532:65532 in llm-d-router's Dockerfile.epp
HOME_DIR = "/home/modelyard"
TMP_DIR = "/tmp"


def pod_security(uid: int) -> Doc:
    """Pod-level securityContext: a non-root UID and group, volumes writable by that group."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        # chown a large model cache once, not on every start
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> Doc:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def writable_scratch(home: bool) -> tuple[list[Doc], list[Doc]]:
    """(volumes, mounts) for what a read-only root file system still needs to write: /tmp,
    and HOME where the process keeps caches (~/.cache, ~/.triton, ~/.config)."""
    dirs = {"tmp": TMP_DIR, **({"home": HOME_DIR} if home else {})}
    volumes = [{"name": name, "emptyDir": {}} for name in dirs]
    mounts = [{"name": name, "mountPath": path} for name, path in dirs.items()]
    return volumes, mounts
