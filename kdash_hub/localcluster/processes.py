"""Process mode: a notebook container run as a real local process, the way a pod would see it.

A notebook container (one that KubeSpawner gave `JUPYTERHUB_SERVICE_URL`) becomes a
`jupyterhub-singleuser` process (the one in this Python environment); so does any container
with a command in a pod annotated `localcluster.kdash-hub.io/run-as-process: "true"`. With:

- the container's command and args (`jupyterhub-singleuser`, `start-notebook.sh`, ... or
  no command at all all mean this environment's `jupyterhub-singleuser`);
- the container's environment, resolved like the kubelet does: `envFrom` then `env`,
  `valueFrom` secret/configMap keys, the downward API (`fieldRef`, `resourceFieldRef`),
  and `$(VAR)` references;
- its own loopback pod IP: in a pod, binding 0.0.0.0 means "the pod's address", so a
  `JUPYTERHUB_SERVICE_URL` on 0.0.0.0 (or ::) is rewritten to the pod IP;
- a root directory per pod: container paths (`workingDir`, `HOME` = /home/jovyan by
  default, volume mounts) live under it. A PVC mount is a directory per claim that outlives
  the pod (so data survives a restart), an NFS export a directory per server:path shared by
  all pods, a hostPath a directory per node, emptyDir is per pod, configMap/secret volumes
  are written out as files.

Not emulated: the image itself, users/uids (securityContext; when this machine runs the
kubelet as root the server gets `--allow-root`, as it would run as jovyan in the image),
resource limits, probes (readiness = the server's port accepts connections).
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .scheduler import parse_quantity

Lookup = Callable[[str, str, str], Awaitable[dict | None]]

# commands that start a notebook server in the usual images: all run as our singleuser
NOTEBOOK_COMMANDS = {
    "jupyterhub-singleuser", "jupyter-labhub", "start-singleuser.sh", "start-notebook.sh",
    "start-notebook.py", "start-singleuser.py",
}
DEFAULT_HOME = "/home/jovyan"
RUN_AS_PROCESS = "localcluster.kdash-hub.io/run-as-process"
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_BIND_ALL = {"", "0.0.0.0", "::", "[::]"}


class ContainerConfigError(Exception):
    """The container can't be created as specified (a missing secret, say); the kubelet
    reports it as the waiting reason CreateContainerConfigError, like the real one."""


def is_notebook_container(container: Mapping) -> bool:
    """A container KubeSpawner made for a single-user server."""
    return any(e.get("name") == "JUPYTERHUB_SERVICE_URL" for e in container.get("env") or [])


def process_containers(pod: Mapping) -> list[Mapping]:
    """The containers process mode runs as processes: notebook containers, and every
    container with a command in a pod annotated `RUN_AS_PROCESS` = "true" (a test's or the
    demo's side service that should really answer, e.g. `python -m http.server`)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(RUN_AS_PROCESS) == "true":
        return [c for c in containers if c.get("command") or c.get("args")
                or is_notebook_container(c)]
    return [c for c in containers if is_notebook_container(c)]


def singleuser_program() -> str:
    """`jupyterhub-singleuser` of this Python environment (then PATH)."""
    local = Path(sys.executable).parent / "jupyterhub-singleuser"
    if local.exists():
        return str(local)
    found = shutil.which("jupyterhub-singleuser")
    if not found:
        raise ContainerConfigError("jupyterhub-singleuser is not installed in this environment")
    return found


def container_argv(container: Mapping, env: Mapping[str, str] | None = None) -> list[str]:
    """The process's argv: `$(VAR)` expanded from `env` as Kubernetes does, notebook
    launchers replaced by our jupyterhub-singleuser, other programs looked up in this
    environment's bin directory first, then PATH."""
    argv = [expand_refs(str(a), env or {})
            for a in list(container.get("command") or []) + list(container.get("args") or [])]
    if not argv or os.path.basename(argv[0]) in NOTEBOOK_COMMANDS:
        # images run the server as an unprivileged user (jovyan); if this machine runs us
        # as root, say that this is fine, or jupyter_server refuses to start
        root = ["--allow-root"] if os.geteuid() == 0 and "--allow-root" not in argv else []
        return [singleuser_program(), *argv[1:], *root]
    local = Path(sys.executable).parent / os.path.basename(argv[0])
    if not os.path.isabs(argv[0]) and local.exists():
        return [str(local), *argv[1:]]
    return argv


def rewrite_bind_url(url: str, pod_ip: str) -> str:
    """http://0.0.0.0:8888/user/x/ -> http://<pod ip>:8888/user/x/ (other hosts kept)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host not in _BIND_ALL and f"[{host}]" not in _BIND_ALL:
        return url
    netloc = pod_ip + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def expand_refs(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`."""

    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REF.sub(sub, value)


def _field_ref(pod: Mapping, path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path] or ""
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ContainerConfigError(f"unsupported fieldRef {path!r}")


def _resource_ref(container: Mapping, ref: Mapping, node_allocatable: Mapping[str, str]) -> str:
    kind, _, resource = ref.get("resource", "").partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(resource)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(resource)
    if value is None:
        value = node_allocatable.get(resource, "0")  # unset limits default to the node
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(value) / divisor))


async def _keyed(lookup: Lookup, kind: str, namespace: str, name: str) -> dict[str, str] | None:
    obj = await lookup(kind, namespace, name)
    if obj is None:
        return None
    data = dict(obj.get("data") or {})
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}
    return data


async def _key_ref(lookup: Lookup, kind: str, namespace: str, ref: Mapping) -> str | None:
    label = "secret" if kind == "Secret" else "configmap"
    data = await _keyed(lookup, kind, namespace, ref.get("name", ""))
    if data is None:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(f'{label} "{ref.get("name")}" not found')
    if ref.get("key") not in data:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(
            f"couldn't find key {ref.get('key')} in {label.capitalize()} "
            f"{namespace}/{ref.get('name')}"
        )
    return data[ref["key"]]


async def container_env(
    pod: Mapping,
    container: Mapping,
    *,
    pod_ip: str,
    host_ip: str,
    lookup: Lookup,
    node_allocatable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as the kubelet resolves it (see the module docstring)."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if not ref:
                continue
            data = await _keyed(lookup, kind, namespace, ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    continue
                label = "secret" if kind == "Secret" else "configmap"
                raise ContainerConfigError(f'{label} "{ref.get("name")}" not found')
            env.update({prefix + k: v for k, v in data.items()})
    for entry in container.get("env") or []:
        name = entry["name"]
        source = entry.get("valueFrom")
        if not source:
            env[name] = expand_refs(entry.get("value") or "", env)
            continue
        value: str | None
        if "secretKeyRef" in source:
            value = await _key_ref(lookup, "Secret", namespace, source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = await _key_ref(lookup, "ConfigMap", namespace, source["configMapKeyRef"])
        elif "fieldRef" in source:
            value = _field_ref(pod, source["fieldRef"].get("fieldPath", ""), pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            value = _resource_ref(container, source["resourceFieldRef"], node_allocatable or {})
        else:
            raise ContainerConfigError(f"unsupported valueFrom for {name}")
        if value is not None:
            env[name] = value
    if "JUPYTERHUB_SERVICE_URL" in env:
        env["JUPYTERHUB_SERVICE_URL"] = rewrite_bind_url(env["JUPYTERHUB_SERVICE_URL"], pod_ip)
    return env


def container_path(root: Path, path: str) -> Path:
    """Where the container path `path` lives for a pod whose root directory is `root`."""
    return root / path.lstrip("/")


def notebook_port(container: Mapping, env: Mapping[str, str]) -> int | None:
    """The port the server will listen on: from its bind URL, else the notebook-port."""
    url = env.get("JUPYTERHUB_SERVICE_URL")
    if url:
        parts = urlsplit(url)
        if parts.port:
            return parts.port
    ports = container.get("ports") or []
    for port in ports:
        if port.get("name") == "notebook-port":
            return int(port["containerPort"])
    return int(ports[0]["containerPort"]) if ports else None


def port_is_free(ip: str, port: int) -> bool:
    """True when nothing on this machine listens on ip:port (another cluster's pod, say)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


async def port_answers(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def prepare_volumes(
    pod: Mapping,
    container: Mapping,
    *,
    pod_root: Path,
    cluster_root: Path,
    lookup: Lookup,
) -> None:
    """Make each volume mount of the container a directory (or symlink) under `pod_root`."""
    namespace = pod["metadata"]["namespace"]
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    # parents first, so a mount inside another mount lands inside it, as in a container
    for mount in sorted(container.get("volumeMounts") or [], key=lambda m: m["mountPath"]):
        volume = volumes.get(mount["name"], {})
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName", mount["name"])
            source = cluster_root / "volumes" / namespace / claim
        elif "nfs" in volume:  # one export, shared by every pod that mounts it
            nfs = volume["nfs"]
            source = container_path(cluster_root / "nfs" / nfs.get("server", "server"),
                                    nfs.get("path", "/"))
        elif "hostPath" in volume:  # the node's directory
            node = (pod.get("spec") or {}).get("nodeName") or "node"
            source = container_path(cluster_root / "hostpath" / node,
                                    volume["hostPath"].get("path", "/"))
        elif "configMap" in volume or "secret" in volume:
            source = pod_root.parent / f".{pod_root.name}-volumes" / mount["name"]
            kind, ref = (
                ("ConfigMap", volume["configMap"].get("name", ""))
                if "configMap" in volume
                else ("Secret", volume["secret"].get("secretName", ""))
            )
            data = await _keyed(lookup, kind, namespace, ref) or {}
            source.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                (source / key).write_text(value)
        else:  # emptyDir and everything else: a directory of this pod
            source = pod_root.parent / f".{pod_root.name}-volumes" / mount["name"]
        if mount.get("subPath"):
            source = source / mount["subPath"]
        source.mkdir(parents=True, exist_ok=True)
        target = container_path(pod_root, mount["mountPath"])
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            continue
        target.symlink_to(source, target_is_directory=True)


class ContainerProcess:
    """One container as a local process group: start, wait, stop (SIGTERM then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
                 log_path: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._swept = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _open_log(self):
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.log_path, "ab")  # noqa: SIM115 - closed right after the fork

    async def start(self) -> None:
        with self._open_log() as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the process group, SIGKILL after `grace` seconds; the exit code.

        The group is swept once only: after that its id may belong to someone else."""
        if self.process is None:
            return None
        if self._swept:
            return await self.process.wait()
        if self.process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.process.wait()), grace)
            except TimeoutError:
                pass
        self._signal_group(signal.SIGKILL)  # also what the server left behind (kernels)
        self._swept = True
        return await self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def base_environment(pod_name: str, home: Path, tmp: Path) -> dict[str, Any]:
    """What a container runtime gives every process before the pod's own env."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HOSTNAME": pod_name,
        "HOME": str(home),
        "TMPDIR": str(tmp),
    }
    for key in ("LANG", "LC_ALL", "TZ"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env
