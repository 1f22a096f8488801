"""Pod Security Standards, "restricted" profile (which includes "baseline"), as the admission
controller applies it to a pod template: https://kubernetes.io/docs/concepts/security/
pod-security-standards/ (profile version v1.30, read 2026-12-01). A namespace labelled
`pod-security.kubernetes.io/enforce: restricted` rejects a pod with any of these findings.
"""

from __future__ import annotations

from modelyard.deploy.validate.documents import Doc, containers

RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SECCOMP_ALLOWED = ("RuntimeDefault", "Localhost")


def _baseline(spec: Doc) -> list[str]:
    out = [
        f"{field}: true shares the node's namespace (baseline forbids it)"
        for field in ("hostNetwork", "hostPID", "hostIPC")
        if spec.get(field)
    ]
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            out.append(f"volume {volume.get('name')}: hostPath mounts the node's file system")
        elif kinds and not kinds <= RESTRICTED_VOLUMES:
            out.append(
                f"volume {volume.get('name')}: type {sorted(kinds)[0]} is not allowed under "
                f"restricted (allowed: {', '.join(sorted(RESTRICTED_VOLUMES))})"
            )
    sysctls = ((spec.get("securityContext") or {}).get("sysctls")) or []
    out += [
        f"sysctl {s.get('name')} is not in the safe set"
        for s in sysctls
        if s.get("name") not in SAFE_SYSCTLS
    ]
    return out


def _container(container: Doc, pod_context: Doc) -> list[str]:
    name = container.get("name", "?")
    context = container.get("securityContext") or {}
    out: list[str] = []
    if context.get("privileged"):
        out.append(f"container {name}: privileged")
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"container {name}: a Windows HostProcess container")
    if context.get("procMount", "Default") != "Default":
        out.append(f"container {name}: procMount {context['procMount']} unmasks /proc")
    if any(p.get("hostPort") for p in container.get("ports") or []):
        out.append(f"container {name}: hostPort binds a port of the node")
    if context.get("allowPrivilegeEscalation") is not False:
        out.append(f"container {name}: allowPrivilegeEscalation must be false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        out.append(f"container {name}: capabilities.drop must include ALL")
    added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
    if added:
        out.append(f"container {name}: adds capabilities {sorted(added)} (only NET_BIND_SERVICE)")
    non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    if non_root is not True:
        out.append(f"container {name}: runAsNonRoot must be true (pod or container)")
    if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
        out.append(f"container {name}: runAsUser 0 is root")
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in SECCOMP_ALLOWED:
        out.append(
            f"container {name}: seccompProfile.type must be RuntimeDefault or Localhost "
            f"(pod or container), not {seccomp or 'unset'}"
        )
    return out


def restricted_findings(spec: Doc) -> list[str]:
    """Why the restricted profile rejects a pod with this spec (empty: admitted)."""
    pod_context = spec.get("securityContext") or {}
    out = _baseline(spec)
    if (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        out.append("pod: a Windows HostProcess pod")
    if pod_context.get("runAsUser") == 0:
        out.append("pod: runAsUser 0 is root")
    every = [*containers(spec), *(spec.get("ephemeralContainers") or [])]
    for container in every:
        out += _container(container, pod_context)
    return [f"Pod Security restricted: {message}" for message in out]
