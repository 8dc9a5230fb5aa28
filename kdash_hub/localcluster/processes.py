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
  default, volume mounts, see `volumes.py`) live under it;
- outgoing connections from the pod's address (`source_address_env`: a `sitecustomize`
  that binds Python sockets to the pod IP; not needed in a pod network namespace);
- its output in the CRI log format (`containerlogs.py`); `ExecProcess` runs `kubectl exec`
  commands in the same environment.

Users: a kubelet running as root runs each process as the container's securityContext
user, in a private mount namespace (`podsandbox.py`); `--allow-root` is only given to a
server that really runs as root (`runAsUser: 0`). Not emulated: the image itself,
resource limits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from . import containerlogs, imageprograms
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
    demo's side service that should really answer, e.g. `python -m http.server`), and
    every container whose image's program this machine has (`imageprograms.py`)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(RUN_AS_PROCESS) == "true":
        return [c for c in containers if c.get("command") or c.get("args")
                or is_notebook_container(c) or imageprograms.program_for(c)]
    return [c for c in containers
            if is_notebook_container(c) or imageprograms.program_for(c)]


def singleuser_program() -> str:
    """`jupyterhub-singleuser` of this Python environment (then PATH)."""
    local = Path(sys.executable).parent / "jupyterhub-singleuser"
    if local.exists():
        return str(local)
    found = shutil.which("jupyterhub-singleuser")
    if not found:
        raise ContainerConfigError("jupyterhub-singleuser is not installed in this environment")
    return found


def container_argv(container: Mapping, env: Mapping[str, str] | None = None, *,
                   as_root: bool | None = None) -> list[str]:
    """The process's argv: `$(VAR)` expanded from `env` as Kubernetes does, notebook
    launchers replaced by our jupyterhub-singleuser, other programs looked up in this
    environment's bin directory first, then PATH. `as_root`: the process will run as
    root (default: when this kubelet does)."""
    argv = [expand_refs(str(a), env or {})
            for a in list(container.get("command") or []) + list(container.get("args") or [])]
    if not argv or os.path.basename(argv[0]) in NOTEBOOK_COMMANDS:
        # images run the server as an unprivileged user (jovyan); if this machine runs us
        # as root, say that this is fine, or jupyter_server refuses to start
        if as_root is None:
            as_root = os.geteuid() == 0
        root = ["--allow-root"] if as_root and "--allow-root" not in argv else []
        return [singleuser_program(), *argv[1:], *root]
    local = Path(sys.executable).parent / os.path.basename(argv[0])
    if not os.path.isabs(argv[0]) and local.exists():
        return [str(local), *argv[1:]]
    return argv


def resolve_program(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """argv with its program found on the container's PATH, so that a missing program is
    an OSError here (StartError), not an exit code of the wrapper that would run it."""
    if not argv:
        raise FileNotFoundError(2, "No such file or directory", "")
    if os.sep in argv[0]:
        if not os.path.exists(argv[0]):
            raise FileNotFoundError(2, "No such file or directory", argv[0])
        return list(argv)
    found = shutil.which(argv[0], path=env.get("PATH") or os.defpath)
    if found is None:
        raise FileNotFoundError(2, "executable file not found in $PATH", argv[0])
    return [found, *argv[1:]]


Wrap = Callable[[list[str]], list[str]]


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


async def port_answers(ip: str, port: int) -> bool:
    try:
        async with asyncio.timeout(1.0):  # not wait_for: see probes.ProbeWorker.stop
            _, writer = await asyncio.open_connection(ip, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


class ContainerProcess:
    """One container instance as a local process group: start, wait, stop (SIGTERM then
    SIGKILL). Its stdout and stderr go to `log_path` in the CRI log format."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
                 log_path: Path, wrap: Wrap | None = None):
        self.name = name
        self.argv = argv
        self.wrap = wrap  # runs the argv as the pod's user, in its namespaces
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._pumps: asyncio.Future | None = None
        self._swept = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def output_done(self) -> bool:
        """The process has exited and all its output is in the log."""
        return self._pumps is None or self._pumps.done()

    def _open_log(self) -> BinaryIO:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.log_path, "ab")  # noqa: SIM115 - closed when both pumps end

    async def start(self) -> None:
        argv = resolve_program(self.argv, self.env) if self.wrap else self.argv
        out = self._open_log()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *(self.wrap(argv) if self.wrap else argv), cwd=self.cwd, env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, limit=2**20,
            )
        except BaseException:
            out.close()
            raise
        assert self.process.stdout is not None and self.process.stderr is not None
        pumps = asyncio.gather(containerlogs.pump(self.process.stdout, "stdout", out),
                               containerlogs.pump(self.process.stderr, "stderr", out),
                               return_exceptions=True)
        pumps.add_done_callback(lambda _: out.close())
        self._pumps = pumps

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self._pumps is not None:
            # a child that outlives the process may hold its output open: don't wait for it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pumps), 2.0)
        return code

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
        code = await self.process.wait()
        if self._pumps is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pumps), 2.0)
        return code

    def log_tail(self, lines: int = 20) -> str:
        return containerlogs.tail_text(self.log_path, lines)


def base_environment(pod_name: str, home: Path, tmp: Path) -> dict[str, Any]:
    """What a container runtime gives every process before the pod's own env."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(PODIMAGE),
        "HOSTNAME": pod_name,
        "HOME": str(home),
        "TMPDIR": str(tmp),
    }
    for key in ("LANG", "LC_ALL", "TZ"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


PODSITE = Path(__file__).parent / "podsite"  # its sitecustomize binds to the pod's address
# the stand-in notebook image's Python path: this environment's packages, less what
# podsite/image shadows (jsonschema's IRI grammar: 5 s of CPU at every server start)
PODIMAGE = PODSITE / "image"


def source_address_env(pod_ip: str, env: Mapping[str, str]) -> dict[str, str]:
    """What makes a pod's Python processes connect from the pod's own address: our
    `sitecustomize` first on PYTHONPATH, and the address it binds to."""
    path = os.pathsep.join(p for p in (str(PODSITE), env.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "KDASH_POD_IP": pod_ip}


class ExecProcess:
    """A command run in a container for `pods/exec`: pipes, or a terminal with `tty`."""

    def __init__(self, process: asyncio.subprocess.Process, master: int | None):
        self.process = process
        self.master = master  # the terminal's controlling side (tty), else None

    @classmethod
    async def start(cls, argv: list[str], env: Mapping[str, str], cwd: Path | None, *,
                    tty: bool, stdin: bool, wrap: Wrap | None = None) -> ExecProcess:
        if wrap is not None:
            argv = wrap(resolve_program(argv, env))
        if not tty:
            process = await asyncio.create_subprocess_exec(
                *argv, env=dict(env), cwd=cwd,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
            return cls(process, None)
        import pty

        master, slave = pty.openpty()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, env={"TERM": "xterm", **env}, cwd=cwd, stdin=slave, stdout=slave,
                stderr=slave, start_new_session=True, preexec_fn=_take_terminal)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(process, master)

    async def output(self, stream: str) -> AsyncIterator[bytes]:
        """Chunks of stdout or stderr (with a tty everything comes as stdout)."""
        if self.master is None:
            reader = self.process.stdout if stream == "stdout" else self.process.stderr
            assert reader is not None
            while chunk := await reader.read(65536):
                yield chunk
            return
        if stream != "stdout":
            return
        loop = asyncio.get_running_loop()
        while True:
            ready = loop.create_future()
            loop.add_reader(self.master, lambda f=ready: f.done() or f.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(self.master)
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the other side is closed, the command has ended
                return
            if not chunk:
                return
            yield chunk

    async def write(self, data: bytes) -> None:
        if self.master is not None:
            os.write(self.master, data)
        elif self.process.stdin is not None:
            self.process.stdin.write(data)
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                await self.process.stdin.drain()

    def close_stdin(self) -> None:
        if self.master is not None:
            os.write(self.master, b"\x04")  # end of file, as a terminal says it
        elif self.process.stdin is not None:
            self.process.stdin.close()

    def resize(self, width: int, height: int) -> None:
        if self.master is None:
            return
        import fcntl
        import struct
        import termios

        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                        struct.pack("HHHH", height, width, 0, 0))

    async def wait(self) -> int:
        code = await self.process.wait()
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


def _take_terminal() -> None:
    """In the child, after setsid: make its terminal the controlling one (as a runtime's
    exec with a tty does), so shells get job control."""
    import fcntl
    import termios

    with contextlib.suppress(OSError):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
