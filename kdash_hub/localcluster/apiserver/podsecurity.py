"""Pod Security Admission: the namespace's `pod-security.kubernetes.io/enforce` level.

Like the real admission plugin, a Pod create in a namespace labelled baseline or restricted
is checked against the Pod Security Standards (latest version) and refused with 403
`pods "x" is forbidden: violates PodSecurity "restricted:latest": <check> (<detail>), ...`,
checks in the order of their ids. Only `enforce` is emulated (warn/audit labels are
ignored), only Pods are enforced (the real plugin merely warns for workload templates), and a
level value it doesn't know is evaluated as restricted, as the real plugin does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION_LABEL = "pod-security.kubernetes.io/enforce-version"
LEVELS = ("privileged", "baseline", "restricted")

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t",
                           "container_engine_t"})
RESTRICTED_VOLUME_TYPES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                     "persistentVolumeClaim", "projected", "secret"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

Check = Callable[[dict], "str | None"]


def _containers(spec: dict) -> Iterator[dict]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _sc(obj: dict) -> dict:
    return obj.get("securityContext") or {}


def _quoted(values: list[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _who(names: list[str], one: str = "container", many: str = "containers") -> str:
    return f"{one if len(names) == 1 else many} {_quoted(names)}"


def _dedup(values: list) -> list:
    return list(dict.fromkeys(values))


# ------------------------------------------------------------------------- baseline


def _apparmor(pod: dict) -> str | None:
    bad: list[str] = []
    for key, value in ((pod["metadata"].get("annotations") or {}).items()):
        if key.startswith(APPARMOR_ANNOTATION) and value not in ("runtime/default",) and \
                not str(value).startswith("localhost/"):
            bad.append(f"{key}={value!r}".replace("'", '"'))
    spec = pod.get("spec") or {}
    if (_sc(spec).get("appArmorProfile") or {}).get("type") == "Unconfined":
        bad.append('pod must not set securityContext.appArmorProfile.type to "Unconfined"')
    for c in _containers(spec):
        if (_sc(c).get("appArmorProfile") or {}).get("type") == "Unconfined":
            bad.append(f'container "{c.get("name")}" must not set '
                       'securityContext.appArmorProfile.type to "Unconfined"')
    return ", ".join(bad) or None


def _capabilities_baseline(pod: dict) -> str | None:
    names, caps = [], []
    for c in _containers(pod["spec"]):
        extra = [a for a in (_sc(c).get("capabilities") or {}).get("add") or []
                 if a not in BASELINE_CAPABILITIES]
        if extra:
            names.append(c.get("name", ""))
            caps += extra
    if not names:
        return None
    return f"{_who(names)} must not include {_quoted(_dedup(caps))} in " \
           "securityContext.capabilities.add"


def _host_namespaces(pod: dict) -> str | None:
    spec = pod["spec"]
    bad = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    return ", ".join(bad) or None


def _host_path_volumes(pod: dict) -> str | None:
    names = [v.get("name", "") for v in pod["spec"].get("volumes") or [] if "hostPath" in v]
    return _who(names, "volume", "volumes") if names else None


def _host_ports(pod: dict) -> str | None:
    names, ports = [], []
    for c in _containers(pod["spec"]):
        used = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if used:
            names.append(c.get("name", ""))
            ports += used
    if not names:
        return None
    verb = "uses hostPort" if len(names) == 1 and len(ports) == 1 else (
        "uses hostPorts" if len(names) == 1 else "use hostPorts")
    return f"{_who(names)} {verb} {', '.join(_dedup(ports))}"


def _privileged(pod: dict) -> str | None:
    names = [c.get("name", "") for c in _containers(pod["spec"]) if _sc(c).get("privileged")]
    return f"{_who(names)} must not set securityContext.privileged=true" if names else None


def _proc_mount(pod: dict) -> str | None:
    bad = [(c.get("name", ""), _sc(c)["procMount"]) for c in _containers(pod["spec"])
           if _sc(c).get("procMount") not in (None, "Default")]
    if not bad:
        return None
    names = [n for n, _ in bad]
    verb = "sets" if len(names) == 1 else "set"
    return f'{_who(names)} {verb} securityContext.procMount=' + \
        ", ".join(f'"{m}"' for m in _dedup([m for _, m in bad]))


def _selinux(pod: dict) -> str | None:
    spec = pod["spec"]
    holders, problems = [], []
    for who, opts in [("pod", _sc(spec).get("seLinuxOptions"))] + [
            (c.get("name", ""), _sc(c).get("seLinuxOptions")) for c in _containers(spec)]:
        if not opts:
            continue
        found = []
        if opts.get("type", "") not in SELINUX_TYPES:
            found.append(f'type "{opts["type"]}"')
        for key in ("user", "role"):
            if opts.get(key):
                found.append(f'{key} "{opts[key]}"')
        if found:
            holders.append(who)
            problems += found
    if not holders:
        return None
    pod_part = holders[0] == "pod"
    names = holders[1:] if pod_part else holders
    subject = " and ".join(filter(None, ["pod" if pod_part else "", _who(names) if names else ""]))
    verb = "sets" if subject in ("pod",) or (not pod_part and len(names) == 1) else "set"
    return f"{subject} {verb} forbidden securityContext.seLinuxOptions: " + \
        "; ".join(_dedup(problems))


def _seccomp_baseline(pod: dict) -> str | None:
    spec = pod["spec"]
    bad = []
    if (_sc(spec).get("seccompProfile") or {}).get("type") == "Unconfined":
        bad.append('pod must not set securityContext.seccompProfile.type to "Unconfined"')
    names = [c.get("name", "") for c in _containers(spec)
             if (_sc(c).get("seccompProfile") or {}).get("type") == "Unconfined"]
    if names:
        bad.append(f'{_who(names)} must not set securityContext.seccompProfile.type to '
                   '"Unconfined"')
    return "; ".join(bad) or None


def _sysctls(pod: dict) -> str | None:
    bad = [s.get("name", "") for s in _sc(pod["spec"]).get("sysctls") or []
           if s.get("name") not in SAFE_SYSCTLS]
    return ", ".join(bad) or None


# ----------------------------------------------------------------------- restricted


def _allow_privilege_escalation(pod: dict) -> str | None:
    names = [c.get("name", "") for c in _containers(pod["spec"])
             if _sc(c).get("allowPrivilegeEscalation") is not False]
    return f"{_who(names)} must set securityContext.allowPrivilegeEscalation=false" \
        if names else None


def _capabilities_restricted(pod: dict) -> str | None:
    no_drop, adders, added = [], [], []
    for c in _containers(pod["spec"]):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            no_drop.append(c.get("name", ""))
        extra = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            adders.append(c.get("name", ""))
            added += extra
    bad = []
    if no_drop:
        bad.append(f'{_who(no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adders:
        bad.append(f"{_who(adders)} must not include {_quoted(_dedup(added))} in "
                   "securityContext.capabilities.add")
    return "; ".join(bad) or None


def _restricted_volumes(pod: dict) -> str | None:
    names, kinds = [], []
    for v in pod["spec"].get("volumes") or []:
        source = [k for k in v if k != "name"]
        if not source or source[0] in RESTRICTED_VOLUME_TYPES:
            continue  # no source is defaulted to emptyDir by the API server
        names.append(v.get("name", ""))
        kinds.append(source[0])
    if not names:
        return None
    kinds = sorted(set(kinds))
    if len(names) == 1:
        return f'volume "{names[0]}" uses restricted volume type "{kinds[0]}"'
    return f"volumes {_quoted(names)} use restricted volume " + (
        f'type "{kinds[0]}"' if len(kinds) == 1 else f"types {_quoted(kinds)}")


def _run_as_non_root(pod: dict) -> str | None:
    spec = pod["spec"]
    pod_value = _sc(spec).get("runAsNonRoot")
    bad = []
    if pod_value is False:
        bad.append("pod must not set securityContext.runAsNonRoot=false")
    explicit = [c.get("name", "") for c in _containers(spec)
                if _sc(c).get("runAsNonRoot") is False]
    if explicit:
        bad.append(f"{_who(explicit)} must not set securityContext.runAsNonRoot=false")
    if pod_value is not True:
        implicit = [c.get("name", "") for c in _containers(spec)
                    if _sc(c).get("runAsNonRoot") is None]
        if implicit:
            bad.append(f"pod or {_who(implicit)} must set securityContext.runAsNonRoot=true")
    return "; ".join(bad) or None


def _run_as_user(pod: dict) -> str | None:
    spec = pod["spec"]
    bad = []
    if _sc(spec).get("runAsUser") == 0:
        bad.append("pod must not set runAsUser=0")
    names = [c.get("name", "") for c in _containers(spec) if _sc(c).get("runAsUser") == 0]
    if names:
        bad.append(f"{_who(names)} must not set runAsUser=0")
    return "; ".join(bad) or None


def _seccomp_restricted(pod: dict) -> str | None:
    spec = pod["spec"]
    ok = ("RuntimeDefault", "Localhost")
    pod_type = (_sc(spec).get("seccompProfile") or {}).get("type")
    bad = []
    if pod_type is not None and pod_type not in ok:
        bad.append(f'pod must not set securityContext.seccompProfile.type to "{pod_type}"')
    wrong: dict[str, list[str]] = {}
    unset = []
    for c in _containers(spec):
        ctype = (_sc(c).get("seccompProfile") or {}).get("type")
        if ctype is None:
            if pod_type is None:
                unset.append(c.get("name", ""))
        elif ctype not in ok:
            wrong.setdefault(ctype, []).append(c.get("name", ""))
    for ctype, names in wrong.items():
        bad.append(f'{_who(names)} must not set securityContext.seccompProfile.type to '
                   f'"{ctype}"')
    if unset:
        bad.append(f'pod or {_who(unset)} must set securityContext.seccompProfile.type to '
                   '"RuntimeDefault" or "Localhost"')
    return "; ".join(bad) or None


# (check id, summary, check); restricted checks replace the baseline ones they override
BASELINE: list[tuple[str, str, Check]] = [
    ("appArmorProfile", "forbidden AppArmor profile", _apparmor),
    ("capabilities_baseline", "non-default capabilities", _capabilities_baseline),
    ("hostNamespaces", "host namespaces", _host_namespaces),
    ("hostPathVolumes", "hostPath volumes", _host_path_volumes),
    ("hostPorts", "hostPort", _host_ports),
    ("privileged", "privileged", _privileged),
    ("procMount", "procMount", _proc_mount),
    ("seLinuxOptions", "seLinuxOptions", _selinux),
    ("seccompProfile_baseline", "seccompProfile", _seccomp_baseline),
    ("sysctls", "forbidden sysctls", _sysctls),
]
RESTRICTED: list[tuple[str, str, Check]] = [
    ("allowPrivilegeEscalation", "allowPrivilegeEscalation != false",
     _allow_privilege_escalation),
    ("capabilities_restricted", "unrestricted capabilities", _capabilities_restricted),
    ("restrictedVolumes", "restricted volume types", _restricted_volumes),
    ("runAsNonRoot", "runAsNonRoot != true", _run_as_non_root),
    ("runAsUser", "runAsUser=0", _run_as_user),
    ("seccompProfile_restricted", "seccompProfile", _seccomp_restricted),
]
_OVERRIDDEN = {"capabilities_baseline", "hostPathVolumes", "seccompProfile_baseline"}


def checks_for(level: str) -> list[tuple[str, str, Check]]:
    """The checks of a level, sorted by id as the real plugin reports them."""
    if level == "privileged":
        return []
    if level == "baseline":
        return BASELINE
    chosen = [c for c in BASELINE if c[0] not in _OVERRIDDEN] + RESTRICTED
    return sorted(chosen, key=lambda c: c[0])


def enforce_level(namespace: dict | None) -> tuple[str, str]:
    """(level, version) a namespace enforces; unknown levels count as restricted."""
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get(ENFORCE_LABEL, "privileged")
    if level not in LEVELS:
        level = "restricted"
    return level, labels.get(ENFORCE_VERSION_LABEL) or "latest"


def violations(pod: dict, level: str) -> list[str]:
    """'<summary> (<detail>)' for every check of `level` the pod fails."""
    pod = {**pod, "spec": pod.get("spec") or {}, "metadata": pod.get("metadata") or {}}
    out = []
    for _id, summary, check in checks_for(level):
        detail = check(pod)
        if detail:
            out.append(f"{summary} ({detail})")
    return out


def forbidden_reason(pod: dict, namespace: dict | None) -> str | None:
    """The text after `pods "x" is forbidden: `, or None when the pod is admitted."""
    level, version = enforce_level(namespace)
    found = violations(pod, level)
    if not found:
        return None
    return f'violates PodSecurity "{level}:{version}": ' + ", ".join(found)
