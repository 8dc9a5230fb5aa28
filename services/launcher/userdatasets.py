"""The Datasets page and API: which S3 datasets the signed-in user gets at their next start,
and (when the admin allows it) adding and removing their own.

Where each list comes from, and why it can be trusted:

- the admin's datasets: the launcher's own setting `datasets_declared` (the spawner's
  `s3_datasets`, without keys: only names, buckets, endpoints, regions, groups), filtered by
  the user's hub groups. Never from the user's namespace, where the user may write.
- the user's own: the Secret `datasets_user_secret` of the user's own namespace, which the
  spawner reads at each start. Each entry is checked by the spawner's own code
  (kdash_hub.spawner.datasets.parse_user) before it is written, and again when shown.
- "in the running server": the `<datasets_secret>-env` Secret the hub wrote at the last
  start (names only, no keys). The user may edit it; that changes only this column.

Everything is the caller's own: the namespace comes from the hub's login, never from the
request. Secret keys are written, never read back into a page or an answer.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.spawner import datasets as D

from .instances import InstanceManager, LauncherError

COMPONENT = "user-datasets"
FIELDS = ("name", "bucket", "endpoint", "region", "path_style", "access_key_id",
          "secret_access_key")


def mask(access_key: Any) -> str:
    """An access key id as the page shows it: its last 4 characters at most."""
    if not isinstance(access_key, str) or len(access_key) < 12:
        return "****"
    return "****" + access_key[-4:]


def usage(name: str, bucket: str) -> dict[str, str]:
    """How a notebook reaches a dataset (text for the page and the API)."""
    return {
        "boto3": f'boto3.Session(profile_name="{name}").client("s3")'
                 f'.list_objects_v2(Bucket="{bucket}")',
        "s3fs": f's3fs.S3FileSystem(profile="{name}").ls("{bucket}")',
        "rclone": f"rclone ls {name}:{bucket}",
    }


def shown(d: D.S3Dataset, source: str, last_start: set[str] | None,
          access_key: str | None = None) -> dict[str, Any]:
    out = {"name": d.name, "bucket": d.bucket, "endpoint": d.endpoint, "region": d.region,
           "path_style": d.path_style, "profile": d.name, "rclone": f"{d.name}:{d.bucket}",
           "source": source, "in_running_server": bool(last_start and d.name in last_start),
           "usage": usage(d.name, d.bucket)}
    if access_key is not None:
        out["access_key_id"] = mask(access_key)
    return out


def check_new(entry: Any, taken_by_admin: set[str], own: list[Any]) -> dict[str, Any]:
    """The entry to store, or LauncherError(400) with one sentence. The checks are the
    spawner's (parse_user), so what is stored is what the next start will use."""
    if not isinstance(entry, dict):
        raise LauncherError(400, "give the dataset as a JSON object")
    unknown = set(entry) - set(FIELDS)
    if unknown:
        raise LauncherError(400, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}"
                                 f" (known: {', '.join(FIELDS)})")
    entry = {k: v for k, v in entry.items() if v is not None and v != ""}
    entry.setdefault("region", "us-east-1")
    entry.setdefault("path_style", True)
    name = entry.get("name")
    if isinstance(name, str) and name in taken_by_admin:
        raise LauncherError(400, f"{name!r} is the name of a dataset your administrator"
                                 " declared; choose another name")
    own_names = {e.get("name") for e in own if isinstance(e, dict)}
    if isinstance(name, str) and name in own_names:
        raise LauncherError(400, f"you have a dataset named {name!r} already; remove it"
                                 " first to change it")
    if len(own) >= D.MAX_USER_DATASETS:
        raise LauncherError(400, f"you have {len(own)} datasets, the most there can be is"
                                 f" {D.MAX_USER_DATASETS}; remove one first")
    found, _keys, problems = D.parse_user(json.dumps([entry]), taken_by_admin)
    if problems or not found:
        message = problems[0] if problems else "the dataset can't be used"
        raise LauncherError(400, message.replace("dataset #1", "the dataset"))
    return entry


class UserDatasets:
    """One signed-in user's datasets (`username` and `groups` from the hub's login)."""

    def __init__(self, manager: InstanceManager, username: str, groups: list[str]):
        self.manager = manager
        self.settings = manager.settings
        self.username = username
        self.groups = groups
        self.namespace = self.settings.user_namespace(username)

    @property
    def allowed(self) -> bool:
        return bool(self.settings.datasets_user_secret)

    def declared(self) -> list[D.S3Dataset]:
        return D.parse(self.settings.datasets_declared)

    async def _secret(self, name: str) -> dict | None:
        try:
            return await self.manager.kube.get("Secret", name, self.namespace)
        except ApiException as e:
            if e.status in (403, 404):  # no namespace (or binding) yet: nothing there
                return None
            raise

    async def _own_raw(self) -> tuple[dict | None, Any]:
        """The user's Secret and its `datasets.json` parsed (None: not JSON)."""
        secret = await self._secret(self.settings.datasets_user_secret)
        raw = ((secret or {}).get("data") or {}).get(D.USER_FILE)
        try:
            text = base64.b64decode(raw or "", validate=True).decode() or "[]"
            return secret, json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deep: not JSON
            return secret, None

    async def last_start(self) -> set[str] | None:
        if not self.settings.datasets_secret:
            return None
        env = await self._secret(D.env_secret_name(self.settings.datasets_secret))
        if env is None:
            return None
        raw = (env.get("data") or {}).get("KDASH_DATASETS") or ""
        try:
            names = base64.b64decode(raw, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return set()
        return {n for n in names.split(",") if n}

    async def view(self) -> dict[str, Any]:
        declared = self.declared()
        last = await self.last_start()
        admin = [shown(d, "admin", last) for d in D.for_groups(declared, self.groups)]
        out: dict[str, Any] = {
            "namespace": self.namespace, "user_datasets_allowed": self.allowed,
            "max_user_datasets": D.MAX_USER_DATASETS, "last_start_known": last is not None,
            "datasets": admin, "left_out": []}
        if not self.allowed:
            return out
        _secret, entries = await self._own_raw()
        if entries is None:
            out["left_out"].append(f"{D.USER_FILE} in your Secret"
                                   f" {self.settings.datasets_user_secret} is not JSON")
            return out
        found, keys, problems = D.parse_user(json.dumps(entries),
                                             {d.name for d in declared})
        out["datasets"] += [shown(d, "own", last, keys[d.name][0]) for d in found]
        out["left_out"] += problems
        return out

    async def add(self, entry: Any) -> dict[str, Any]:
        self._check_allowed()
        declared = {d.name for d in self.declared()}
        secret, entries = await self._own_raw()
        if entries is None or not isinstance(entries, list):
            raise LauncherError(409, f"your Secret {self.settings.datasets_user_secret} does"
                                     f" not hold a list in {D.USER_FILE}; fix it or delete it"
                                     " with kubectl, then add again")
        new = check_new(entry, declared, entries)
        await self._write(secret, [*entries, new])
        d = D.parse_user(json.dumps([new]), declared)[0][0]
        return shown(d, "own", await self.last_start(), new["access_key_id"])

    async def remove(self, name: Any) -> None:
        self._check_allowed()
        secret, entries = await self._own_raw()
        if not isinstance(entries, list) or not any(
                isinstance(e, dict) and e.get("name") == name for e in entries):
            raise LauncherError(404, f"you have no dataset of your own named {name!r}")
        await self._write(secret, [e for e in entries
                                   if not (isinstance(e, dict) and e.get("name") == name)])

    def _check_allowed(self) -> None:
        if not self.allowed:
            raise LauncherError(403, "your administrator does not allow datasets of your own;"
                                     " ask them to declare the ones you need")

    async def _write(self, secret: dict | None, entries: list[Any]) -> None:
        """The user's Secret with `entries`, in the user's own namespace only; a change
        made meanwhile (resourceVersion) is refused, not overwritten."""
        name = self.settings.datasets_user_secret
        data = {D.USER_FILE: base64.b64encode(json.dumps(entries, indent=1).encode()).decode()}
        kube = self.manager.kube
        try:
            if secret is None:
                await self.manager._ensure_namespace(self.namespace, self.username)
                await kube.create({
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                    "metadata": {"name": name, "namespace": self.namespace,
                                 "labels": L.owner_labels(self.username, COMPONENT),
                                 "annotations": L.owner_annotations(self.username)}})
                return
            labels = secret["metadata"].get("labels") or {}
            if labels.get(L.MANAGED_BY) != L.MANAGED_BY_VALUE:
                raise LauncherError(409, f"your Secret {name} was made by hand (kubectl), and"
                                         " the launcher only changes the one it made; delete"
                                         " it with kubectl (or keep editing it there)")
            await kube.patch("Secret", name, self.namespace, {
                "metadata": {"resourceVersion": secret["metadata"]["resourceVersion"]},
                "data": data})
        except ApiException as e:
            if e.status == 409:
                raise LauncherError(409, "your datasets changed meanwhile; reload and try"
                                         " again") from None
            raise LauncherError(502, f"Kubernetes refused to write your Secret {name}"
                                     f" ({e.status}); try again in a minute") from None


def launcher_settings_from_spawner(spawner: dict[str, Any]) -> dict[str, Any]:
    """The launcher's dataset settings mirroring the spawner's (`c.KDashSpawner` as a dict):
    for kdash_hub.z2jh to fill the launcher's section from the spawner's, as it does for the
    culler's profiles. Keys stay in the hub's namespace: only Secret names are copied."""
    mirror = {"s3_datasets": "datasets_declared",
              "s3_datasets_user_secret": "datasets_user_secret",
              "s3_datasets_secret": "datasets_secret", "s3_datasets_dir": "datasets_dir"}
    return {ours: spawner[theirs] for theirs, ours in mirror.items() if theirs in spawner}
