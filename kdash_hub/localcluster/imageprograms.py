"""Process mode: well-known side-service images run as the real program this machine has.

There is no container runtime here, so an image can't run; but for some images the program
inside it is installed on this machine (from Debian or PyPI), and running that program
with the container's environment, ports and volumes is what a data scientist expects of
the demo. The table (`PROGRAMS`) maps an image to such a program:

- `postgres:*` -> Debian's PostgreSQL server: on first start, `initdb` into `$PGDATA`
  (a container path, so on the container's data volume) with `POSTGRES_USER`,
  `POSTGRES_PASSWORD` and `POSTGRES_DB` as the official image documents them; our own
  start-up (`_postgres` below), not the image's script;
- `redis:*` -> `redis-server` with the container's arguments (`--requirepass` ...);
- TensorBoard images (`tensorflow/tensorflow`, `tensorflow/tensorboard`) whose command is
  `tensorboard` -> `python -m tensorboard.main` of this environment, if it has tensorboard;
- `minio/minio:*` (`server /data ...`, the image's entrypoint being `minio`) -> kdash-s3
  (`tools/s3`, kdash_hub.dev.s3, once built) serving the S3 API on the first container port
  with `MINIO_ROOT_USER`/`MINIO_ROOT_PASSWORD` as its only key, signatures checked. Objects
  are kept as files in the folder it serves (the pod's volume); there is no web console.

The container's command still decides what runs (`sh -c 'exec redis-server ...'` works):
the kubelet puts a directory of small launchers first on its PATH, one per program name
(`postgres`, `redis-server`, `tensorboard`, ...), that run the real program listening on the
pod's address and the container's port only (never 0.0.0.0: in loopback mode every pod
shares this machine's network). A container without a command runs the image's default.

An image that isn't in the table (or whose program isn't installed) stays status only; the
kubelet then says so in a pod condition (`NO_PROGRAM_CONDITION`).

This file is also the launchers' entry point (`python imageprograms.py KIND ...`), run as the
pod's user: it imports nothing but the standard library.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# the kubelet's condition on a pod with a container that runs nothing (status only)
NO_PROGRAM_CONDITION = "localcluster.kdash-hub.io/NoLocalProgram"
NO_PROGRAM_REASON = "NoLocalProgram"
SHELLS = {"sh", "bash", "dash"}


def _postgres_bindir() -> Path | None:
    """Debian's newest PostgreSQL server (`/usr/lib/postgresql/N/bin`), else PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    if found:
        return Path(found[-1]).parent
    program = shutil.which("postgres")
    return Path(program).resolve().parent if program else None


@functools.cache
def _postgres_program() -> str | None:
    bindir = _postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        return None
    return str(bindir / "postgres")


@functools.cache
def _redis_program() -> str | None:
    return shutil.which("redis-server")


@functools.cache
def _minio_program() -> str | None:
    from kdash_hub.dev.s3 import cached_binary  # not at the top: launchers import nothing

    found = cached_binary()
    return str(found) if found else None


@functools.cache
def _tensorboard_program() -> str | None:
    return sys.executable if importlib.util.find_spec("tensorboard") else None


@dataclass(frozen=True)
class ImageProgram:
    """An image whose program this machine may have."""

    kind: str  # the launcher's argument: postgres, redis, tensorboard
    repositories: tuple[str, ...]  # image repositories (registry and tag aside)
    commands: tuple[str, ...]  # program names the image's command may use
    default: tuple[str, ...]  # the image's command when the container gives none
    program: Callable[[], str | None]  # the real program here, or None
    shells: bool = True  # `sh -c '... redis-server ...'` commands run too
    env: Callable[[str, int], dict[str, str]] | None = None  # for probes and exec
    entrypoint: tuple[str, ...] = ()  # the image's ENTRYPOINT: a container with args only


PROGRAMS: tuple[ImageProgram, ...] = (
    ImageProgram("postgres", ("postgres", "library/postgres"),
                 ("postgres", "docker-entrypoint.sh"), ("postgres",), _postgres_program,
                 env=lambda ip, port: {"PGHOST": ip, "PGPORT": str(port)}),
    ImageProgram("redis", ("redis", "library/redis"), ("redis-server",), ("redis-server",),
                 _redis_program),
    ImageProgram("tensorboard", ("tensorflow/tensorflow", "tensorflow/tensorboard"),
                 ("tensorboard",), (), _tensorboard_program, shells=False),
    ImageProgram("minio", ("minio/minio",), ("minio",), ("minio", "server", "/data"),
                 _minio_program, shells=False, entrypoint=("minio",)),
)


def repository(image: str) -> str:
    """`docker.io/library/redis:7@sha256:...` -> `library/redis`; `redis:7` -> `redis`."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    name = (head + "/" if head else "") + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # a registry host
    return "/".join(parts)


def _command(container: Mapping) -> list[str]:
    return [str(a) for a in list(container.get("command") or [])
            + list(container.get("args") or [])]


def _argv(entry: ImageProgram, container: Mapping) -> list[str]:
    """The command the container runs: its own, the image's entrypoint with its args, or
    the image's default."""
    if entry.entrypoint and not container.get("command") and container.get("args"):
        return [*entry.entrypoint, *(str(a) for a in container["args"])]
    return _command(container) or list(entry.default)


def program_for(container: Mapping) -> ImageProgram | None:
    """The table's entry that runs `container` here, if its image has one, its command is
    the image's program (or a shell, or none) and the program is installed."""
    repo = repository(str(container.get("image") or ""))
    for entry in PROGRAMS:
        if repo not in entry.repositories:
            continue
        argv = _argv(entry, container)
        if not argv:
            return None
        first = os.path.basename(argv[0])
        if first not in entry.commands and not (entry.shells and first in SHELLS):
            return None
        return entry if entry.program() else None
    return None


def container_port(container: Mapping) -> int | None:
    ports = container.get("ports") or []
    return int(ports[0]["containerPort"]) if ports else None


def prepare(entry: ImageProgram, container: Mapping, env: Mapping[str, str], *, pod_ip: str,
            root: Path, bindir: Path) -> tuple[list[str], dict[str, str]]:
    """(argv, environment additions) for a container `program_for` accepted: launchers
    for the entry's program names in `bindir` (the kubelet's, first on PATH)."""
    from .processes import expand_refs  # not at the top: this file runs alone as well

    program = entry.program()
    assert program is not None
    port = container_port(container) or 0
    bindir.mkdir(parents=True, exist_ok=True)
    os.chmod(bindir, 0o755)
    launch = [sys.executable, "-I", str(Path(__file__).resolve()), entry.kind, str(root),
              pod_ip, str(port), program]
    for name in entry.commands:
        shim = bindir / name
        shim.write_text("#!/bin/sh\nexec " + shlex.join(launch) + ' "$@"\n')
        os.chmod(shim, 0o755)
    argv = [expand_refs(a, env) for a in _argv(entry, container)]
    if os.path.basename(argv[0]) in entry.commands:
        argv[0] = str(bindir / os.path.basename(argv[0]))
    extra = {"PATH": os.pathsep.join([str(bindir), env.get("PATH", os.defpath)])}
    if entry.env is not None:
        extra.update(entry.env(pod_ip, port))
    return argv, extra


# --- the launchers (run as the pod's user) ---------------------------------------------------

def _in_root(root: str, path: str) -> str:
    """A container path as this machine sees it (paths already under the root are kept)."""
    if not path.startswith("/"):
        return path
    inside = os.path.normpath("/" + path)  # `/../..` stays at the container's /
    if inside.startswith(root.rstrip("/") + "/"):
        return inside
    return os.path.join(root, inside.lstrip("/"))


def _postgres(root: str, ip: str, port: str, program: str, args: list[str]) -> None:
    """First start: initdb with the image's variables, remote logins by password; then
    the server on the pod's address only (no Unix socket: there is no /var/run here)."""
    bindir = Path(program).parent
    data = _in_root(root, os.environ.get("PGDATA") or "/var/lib/postgresql/data")
    user = os.environ.get("POSTGRES_USER") or "postgres"
    database = os.environ.get("POSTGRES_DB") or user
    if args and os.path.basename(args[0]) == "postgres":
        args = args[1:]  # `docker-entrypoint.sh postgres -c ...`
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        password = os.environ.get("POSTGRES_PASSWORD")
        if not password:
            sys.exit("postgres: POSTGRES_PASSWORD is empty; this local cluster never starts "
                     "a database without a password")
        with tempfile.NamedTemporaryFile("w", prefix="pwfile-") as pwfile:
            pwfile.write(password)
            pwfile.flush()
            subprocess.run([str(bindir / "initdb"), "-D", data, "-U", user,
                            f"--pwfile={pwfile.name}", "-E", "UTF8", "--no-locale",
                            "--auth=scram-sha-256"], check=True)
        with open(os.path.join(data, "pg_hba.conf"), "a") as hba:
            hba.write("\n# kdash-hub local cluster: logins from any address, by password\n"
                      "host all all all scram-sha-256\n")
        if database != "postgres":
            quoted = '"' + database.replace('"', '""') + '"'
            subprocess.run([program, "--single", "-D", data, "-c", "unix_socket_directories=",
                            "postgres"], input=f"CREATE DATABASE {quoted};\n".encode(),
                           check=True, stdout=subprocess.DEVNULL)
    # the address and port last: a later option wins, so the container's can't widen them
    os.execv(program, [program, "-D", data, *args, "-c", "listen_addresses=" + ip,
                       "-p", port, "-c", "unix_socket_directories="])


def _redis(root: str, ip: str, port: str, program: str, args: list[str]) -> None:
    """redis-server with the container's arguments; the address and port last (they win)."""
    os.execv(program, [program, *args, "--bind", ip, "--port", port])


def _tensorboard(root: str, ip: str, port: str, program: str, args: list[str]) -> None:
    """TensorBoard on the pod's address (not --bind_all), log directories in the pod."""
    kept: list[str] = []
    previous = ""
    for arg in args:
        flag, eq, value = arg.partition("=")
        if previous == "--host" or arg == "--bind_all" or (flag == "--host" and eq):
            previous = ""
            continue
        if previous in ("--logdir", "--logdir_spec"):
            arg = _in_root(root, arg)
        elif flag in ("--logdir", "--logdir_spec") and eq:
            arg = f"{flag}={_in_root(root, value)}"
        previous = arg
        if arg != "--host":
            kept.append(arg)
    if not any(a == "--port" or a.startswith("--port=") for a in kept):
        kept.append(f"--port={port}")
    os.execv(program, [program, "-m", "tensorboard.main", *kept, "--host", ip])


# `minio server` flags that take no value
_MINIO_SWITCHES = {"quiet", "anonymous", "json", "help", "h"}


def _minio(root: str, ip: str, port: str, program: str, args: list[str]) -> None:
    """kdash-s3 for `minio server DIR...`: the API on the pod's address and first port, the
    image's root user as its key (never MinIO's well-known default), the objects in DIR."""
    user = os.environ.get("MINIO_ROOT_USER") or os.environ.get("MINIO_ACCESS_KEY")
    password = os.environ.get("MINIO_ROOT_PASSWORD") or os.environ.get("MINIO_SECRET_KEY")
    if not user or not password:
        sys.exit("minio: MINIO_ROOT_USER and MINIO_ROOT_PASSWORD must be set; this local "
                 "cluster never starts an S3 server with a default key")
    if not args or args[0] != "server":
        sys.exit(f"minio: only `minio server` runs here, not {shlex.join(args)!r}")
    env = {"PATH": os.environ.get("PATH", os.defpath), "KDASH_S3_ACCESS_KEY": user,
           "KDASH_S3_SECRET_KEY": password}
    argv = [program, "-listen", f"{ip}:{port if port != '0' else 9000}"]
    # `minio server DIR`: the objects live as files in DIR (the pod's volume), so a restarted
    # pod serves what it held; flags (`--console-address ...`) and their values are skipped
    folder, rest = None, list(args[1:])
    while rest and folder is None:
        arg = rest.pop(0)
        if not arg.startswith("-"):
            folder = arg
        elif "=" not in arg and arg.lstrip("-") not in _MINIO_SWITCHES and rest:
            rest.pop(0)  # the flag's value
    if folder is not None:
        # a relative folder is the container's working directory's (this process's, under
        # the root): made a container path first, so `..` can't climb out of the root
        cwd = os.path.relpath(os.getcwd(), root)
        cwd = "/" if cwd == ".." or cwd.startswith("../") else "/" + cwd
        argv += ["-data", _in_root(root, os.path.join(cwd, folder))]
    os.execve(program, argv, env)


LAUNCHERS: dict[str, Callable[[str, str, str, str, list[str]], None]] = {
    "postgres": _postgres, "redis": _redis, "tensorboard": _tensorboard, "minio": _minio,
}


def main(argv: list[str]) -> None:
    """`imageprograms.py KIND ROOT POD_IP PORT PROGRAM [ARGS...]`."""
    kind, root, ip, port, program, *args = argv
    LAUNCHERS[kind](root, ip, port, program, args)


if __name__ == "__main__":
    main(sys.argv[1:])
