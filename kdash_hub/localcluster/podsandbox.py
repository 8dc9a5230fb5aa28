"""Who a process-mode pod's processes run as, and how much of this machine they see.

A kubelet running as root starts every process of a pod (its containers, `kubectl exec`
commands, exec probes) through one wrapper, instead of as itself:

    nsenter --net=/run/netns/<pod>            only with a pod network namespace (podnetwork.py)
    unshare --mount --propagation private     a private mount namespace, in which the pod's
    sh -c <mask> <file> <target>... --        own /etc files are bound (its resolv.conf,
                                              clusterdns.py) and directories pods must not
                                              see are covered
    setpriv --reuid U --regid G --groups ...  the container's securityContext identity,
            --no-new-privs --inh-caps=-all --bounding-set=-all
    <argv>

The identity is the container's effective `runAsUser`/`runAsGroup` (container level over
pod level) with `fsGroup` and `supplementalGroups` as supplementary groups. Without
`runAsUser` the process runs as `default_uid` (65534, nobody) rather than as root, as an
image with a non-root USER would; `runAsUser: 0` runs as root (PodSecurity's restricted
level refuses that before it gets here).

The mask: a non-root pod sees its own directories, the Python it runs and nothing else of
the directories around them. Every directory on the way to what a pod needs that others
can't traverse (/root, a 0700 temporary directory), and the directory holding the
kubelet's working directory (where the demo keeps the hub database and the admin
kubeconfig), is covered with an empty tmpfs in the pod's mount namespace; only the needed
paths are bound back into it. A kubelet that doesn't run as root can't switch users: its
pods run as the kubelet's own user, as before.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
PODSITE = Path(__file__).parent / "podsite"


@dataclass(frozen=True)
class Identity:
    """The uid, primary gid and supplementary groups a container's processes run as."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    @property
    def root(self) -> bool:
        return self.uid == 0


def identity_of(pod: Mapping, container: Mapping | None, *, default_uid: int = NOBODY,
                default_gid: int = NOBODY) -> Identity:
    """The effective securityContext identity of `container` (None: the pod's own)."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = (container or {}).get("securityContext") or {}

    def pick(key: str, default: int) -> int:
        for source in (sc, pod_sc):
            if source.get(key) is not None:
                return int(source[key])
        return default

    uid = pick("runAsUser", default_uid)
    gid = pick("runAsGroup", default_gid)
    groups: list[int] = []
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    groups += [int(g) for g in pod_sc.get("supplementalGroups") or []]
    return Identity(uid, gid, tuple(dict.fromkeys(g for g in groups if g != gid)))


def can_switch_users() -> bool:
    """Only root can start processes as another uid (and make namespaces)."""
    return os.geteuid() == 0


def _traversable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IXOTH)
    except OSError:
        return True  # missing: nothing to hide


def _topmost_closed(path: Path) -> Path | None:
    """The outermost ancestor of `path` (itself excluded) that others can't traverse."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not _traversable(parent):
            return parent
    return None


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _outermost_private(path: Path, others: list[Path]) -> Path | None:
    """The outermost ancestor of `path` below a top-level directory (never /tmp or /work
    themselves) that holds no other needed path: the folder the kubelet's working
    directory came with (the demo's, a test's, the control plane's, with its keys)."""
    for parent in reversed(path.parents):
        if len(parent.parts) < 3:
            continue
        if not any(_inside(o, parent) for o in others):
            return parent
    return None


def mask_plan(needed: Iterable[Path], around: Path | None = None) -> dict[Path, list[Path]]:
    """Directory to cover -> the needed paths under it to bind back.

    Covered: every outermost directory that others can't traverse on the way to a needed
    path, and the folder around `around` (see `_outermost_private`). Nested covers are
    merged into the outermost."""
    paths = {Path(os.path.realpath(p)) for p in needed}
    if around is not None:
        around = Path(os.path.realpath(around))
        paths.add(around)
    needed = sorted(p for p in paths if not any(q != p and _inside(p, q) for q in paths))
    covers = {c for c in (_topmost_closed(p) for p in needed) if c is not None}
    if around is not None:
        private = _outermost_private(around, [p for p in needed if not _inside(p, around)])
        if private is not None:
            covers.add(private)
    covers -= {Path("/"), *needed}
    covers = {c for c in covers if not any(o != c and _inside(c, o) for o in covers)}
    return {c: [p for p in needed if _inside(p, c) and p != c] for c in sorted(covers)}


_BIND_SCRIPT = ('set -e; while [ "$1" != -- ]; do {mount} --bind "$1" "$2"; shift 2; done; '
                'shift; exec "$@"')


class Sandbox:
    """Builds the wrapper argv for one kubelet (see the module docstring)."""

    def __init__(self, needed: Iterable[Path], around: Path | None = None):
        self.enabled = can_switch_users()
        self.plan = mask_plan(needed, around) if self.enabled else {}
        self._stash: Path | None = None
        tools = ("nsenter", "unshare", "setpriv", "mount", "umount", "mkdir", "sh")
        found = {t: shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") for t in tools}
        missing = [t for t, p in found.items() if p is None]
        if self.enabled and missing:
            raise RuntimeError(f"the process kubelet runs pods as their securityContext "
                               f"users with util-linux; missing here: {', '.join(missing)}")
        self.tools = {t: str(p) for t, p in found.items()}
        self._script: str | None = None

    @classmethod
    def for_kubelet(cls, workdir: Path, extra: Iterable[Path] = ()) -> Sandbox:
        """What every pod needs: this Python (its installation and the venv), our pod
        site directory, programs cached for side services, the kubelet's working directory;
        hidden: the folder around that (`_outermost_private`)."""
        workdir.mkdir(parents=True, exist_ok=True)
        needed = [Path(sys.base_prefix), Path(sys.prefix), PODSITE, *extra]
        cache = Path.home() / ".cache" / "kdash-hub"  # programs installed for side services
        if cache.is_dir():
            needed.append(cache)
        return cls(needed, workdir)

    def _mask_script(self) -> str:
        if self._script is not None:
            return self._script
        if self._stash is None:
            self._stash = Path(tempfile.mkdtemp(prefix="kdash-pod-stash-"))
        t = self.tools
        # first the pod's own files over the host's (pairs of arguments up to `--`)
        lines = ["set -e",
                 'while [ "$1" != -- ]; do '
                 f'{t["mount"]} --bind "$1" "$2"; shift 2; done; shift']
        binds: list[tuple[Path, Path]] = []
        for index, path in enumerate(p for paths in self.plan.values() for p in paths):
            slot = self._stash / str(index)
            slot.mkdir(exist_ok=True)
            binds.append((path, slot))
            lines.append(f"{t['mount']} --bind {shlex.quote(str(path))} {slot}")
        for cover in self.plan:
            lines.append(f"{t['mount']} -t tmpfs -o mode=0755,size=64k,nosuid,nodev "
                         f"kdash-hidden {shlex.quote(str(cover))}")
        for path, slot in binds:
            quoted = shlex.quote(str(path))
            lines.append(f"{t['mkdir']} -p {quoted}")
            lines.append(f"{t['mount']} --bind {slot} {quoted}")
            lines.append(f"{t['umount']} {slot}")
        lines.append('exec "$@"')
        self._script = "\n".join(lines)
        return self._script

    def wrap(self, argv: list[str], identity: Identity, netns: str | None = None,
             files: Mapping[str, Path] | None = None) -> list[str]:
        """`argv` as the pod's process: in its network namespace, as `identity`, with the
        rest of the machine's private directories covered. `files`: target -> the pod's
        own file bound over it (its /etc/resolv.conf), for root pods too."""
        if not self.enabled:
            return list(argv)
        prefix: list[str] = []
        if netns:
            prefix += [self.tools["nsenter"], f"--net=/run/netns/{netns}", "--"]
        binds = [str(x) for target, path in sorted((files or {}).items())
                 for x in (path, target)]
        unshare = [self.tools["unshare"], "--mount", "--propagation", "private", "--"]
        if identity.root:
            if not binds:
                return prefix + list(argv)
            return prefix + unshare + [
                self.tools["sh"], "-c", _BIND_SCRIPT.format(mount=self.tools["mount"]),
                "kdash-pod", *binds, "--", *argv]
        groups = (["--groups", ",".join(str(g) for g in identity.groups)]
                  if identity.groups else ["--clear-groups"])
        return prefix + unshare + [
            self.tools["sh"], "-c", self._mask_script(), "kdash-pod", *binds, "--",
            self.tools["setpriv"], "--reuid", str(identity.uid), "--regid", str(identity.gid),
            *groups, "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
            *argv]

    def close(self) -> None:
        if self._stash is not None:
            shutil.rmtree(self._stash, ignore_errors=True)
            self._stash = None
            self._script = None


# --- files the kubelet (root) prepares for a pod, and reads back from it --------------------

def own(path: Path, identity: Identity, mode: int | None = None) -> None:
    """Give one path (never what a symlink points at) to the pod's identity."""
    if not can_switch_users():
        return
    os.chown(path, identity.uid, identity.gid, follow_symlinks=False)
    if mode is not None and not path.is_symlink():
        os.chmod(path, mode)


def own_tree(top: Path, identity: Identity, mode: int | None = 0o700) -> None:
    """`top` (mode `mode`) and everything below it to the pod's identity; symlinks are
    changed themselves, never followed (so a link a user planted can't redirect it)."""
    if not can_switch_users():
        return
    own(top, identity, mode)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), identity.uid, identity.gid,
                         follow_symlinks=False)


def own_volume(path: Path, identity: Identity) -> None:
    """A lasting volume (a claim's directory) for this pod: owned by its uid, mode 0700.
    What's inside is changed only when the top isn't the uid's yet (as Kubernetes'
    fsGroupChangePolicy OnRootMismatch does)."""
    if not can_switch_users():
        return
    info = os.lstat(path)
    if (info.st_uid, info.st_gid) == (identity.uid, identity.gid):
        os.chmod(path, 0o700)
        return
    own_tree(path, identity, 0o700)


def traversable_dirs(*paths: Path) -> None:
    """The kubelet's own directories on the way to a pod's: others may pass, not list."""
    if not can_switch_users():
        return
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o711)


def read_beneath(root: Path, path: Path, limit: int) -> bytes:
    """Read `path` (inside `root`) without following any symlink below `root`: a file a
    pod controls (its termination log) can't make the kubelet read another file."""
    rel = Path(os.path.relpath(path, root))
    if rel.is_absolute() or ".." in rel.parts:
        raise OSError(f"{path} is outside {root}")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in rel.parts[:-1]:
            next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        leaf = os.open(rel.parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(leaf).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(leaf, limit)
    finally:
        os.close(leaf)
