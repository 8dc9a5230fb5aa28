"""S3 datasets, as Karvdash binds them: buckets the admin declares, reached from notebooks and
side services through files and variables that boto3, s3fs and rclone read as they are.

The admin declares each dataset in `KDashSpawner.s3_datasets` (checked when the spawner is
configured, i.e. at hub start); its credentials live in a Secret of the hub's namespace,
which users can't read or write. At each start the hub reads those Secrets and writes two
Secrets into the user's namespace with the bundle:

- `kdash-datasets` (files, mounted read-only at `s3_datasets_dir`): `aws-config` (a profile
  per dataset with its endpoint, region and path-style addressing), `aws-credentials` (its
  keys), `rclone.conf` (a remote per dataset) and `datasets.json` (names, buckets,
  endpoints; no keys). With one dataset, it is also the `default` profile.
- `kdash-datasets-env` (envFrom): AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE,
  RCLONE_CONFIG, AWS_ENDPOINT_URL when all the user's datasets share one endpoint,
  KDASH_DATASETS (the names) and KDASH_DATASET_<NAME>_{BUCKET,PROFILE,ENDPOINT}.

Both are rebuilt whole from hub-side state at every start; the hub never reads them back,
so a user who edits them changes only their own pods (and the next start puts them back).
A dataset limited to `groups` reaches only members: another user's namespace never holds
its keys. Names are [a-z0-9] words joined by single `-`, so the maps name -> variable and
name -> file/profile/remote are injective.

Users add their own datasets only if the admin names a Secret for them
(`s3_datasets_user_secret`): its key `datasets.json` in the user's own namespace, a list of
{name, bucket, endpoint, region, path_style, access_key_id, secret_access_key}. It is
user-written state, so each entry passes the admin's checks (and the keys the same character
rule) or is left out, a name of an admin's dataset is never taken over, and what it gives
goes only into that user's own namespace, which is where it came from.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio.client.models import (
    V1EnvFromSource,
    V1KeyToPath,
    V1SecretEnvSource,
    V1SecretVolumeSource,
    V1Volume,
    V1VolumeMount,
)
from traitlets import List, TraitError, Unicode, validate
from traitlets.config import Configurable

from kdash_hub import labels as L

COMPONENT = "datasets"
VOLUME = "kdash-datasets"
FILES = ("aws-config", "aws-credentials", "rclone.conf", "datasets.json")
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_NAME = 40
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
K8S_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")  # a Secret's data key
CREDENTIAL_RE = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no space or newline
KEYS = {"name", "bucket", "endpoint", "region", "credentials", "groups", "path_style"}
CREDENTIAL_KEYS = {"secret", "access_key", "secret_key"}
USER_KEYS = {"name", "bucket", "endpoint", "region", "path_style", "access_key_id",
             "secret_access_key"}
USER_FILE = "datasets.json"
MAX_USER_DATASETS = 20
MAX_ENDPOINT = 2048  # 20 of a user's own stay far below a Secret's 1 MiB


class DatasetError(ValueError):
    """A dataset setting that can't be used; the message names the dataset."""


@dataclass(frozen=True)
class S3Dataset:
    name: str
    bucket: str
    endpoint: str
    region: str
    secret: str  # a Secret in the hub's namespace
    access_key: str  # its data key holding the access key id
    secret_key: str  # its data key holding the secret access key
    groups: tuple[str, ...] = ()
    path_style: bool = True

    @property
    def env_prefix(self) -> str:
        return "KDASH_DATASET_" + self.name.upper().replace("-", "_") + "_"


def _text(entry: Mapping, key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{where}: `{key}` must be a non-empty string")
    return value


def parse_one(entry: Any, index: int) -> S3Dataset:
    if not isinstance(entry, Mapping):
        raise DatasetError(f"dataset #{index + 1} must be a mapping like {{name, bucket, "
                           "endpoint, credentials: {secret}}}")
    name = entry.get("name")
    where = f"dataset {name!r}" if isinstance(name, str) else f"dataset #{index + 1}"
    unknown = set(entry) - KEYS
    if unknown:
        raise DatasetError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
                           f" (known: {', '.join(sorted(KEYS))})")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise DatasetError(f"{where}: the name must be 1-{MAX_NAME} lowercase letters and "
                           "digits, words joined by single '-', starting with a letter (it "
                           "names a profile, a remote and environment variables)")
    bucket = _text(entry, "bucket", where)
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise DatasetError(f"{where}: {bucket!r} is not an S3 bucket name (3-63 lowercase "
                           "letters, digits, '.' and '-')")
    endpoint = _text(entry, "endpoint", where)
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # e.g. an unbalanced '[': not a URL (never a crash of the start)
        parts = urlsplit("")
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.username
            or parts.password or parts.query or parts.fragment or parts.path not in ("", "/")
            or any(c.isspace() or not c.isprintable() for c in endpoint)
            or len(endpoint) > MAX_ENDPOINT):
        raise DatasetError(f"{where}: the endpoint must be an http(s) URL with a host and "
                           f"nothing after it, like https://s3.example.org (not {endpoint!r})")
    region = _text(entry, "region", where, "us-east-1")
    if not REGION_RE.fullmatch(region):
        raise DatasetError(f"{where}: {region!r} is not a region name")
    creds = entry.get("credentials")
    if not isinstance(creds, Mapping) or not isinstance(creds.get("secret"), str):
        raise DatasetError(f"{where}: `credentials` must name a Secret of the hub's namespace:"
                           " {secret: NAME, access_key: KEY, secret_key: KEY}")
    unknown = set(creds) - CREDENTIAL_KEYS
    if unknown:
        raise DatasetError(f"{where}: credentials: unknown key(s) "
                           f"{', '.join(sorted(map(str, unknown)))}")
    secret = creds["secret"]
    if not K8S_NAME_RE.fullmatch(secret) or len(secret) > 253:
        raise DatasetError(f"{where}: credentials: {secret!r} is not the name of a Secret in "
                           "the hub's namespace (other namespaces are not allowed)")
    keys = []
    for key, default in (("access_key", "AWS_ACCESS_KEY_ID"),
                         ("secret_key", "AWS_SECRET_ACCESS_KEY")):
        value = creds.get(key, default)
        if not isinstance(value, str) or not KEY_RE.fullmatch(value):
            raise DatasetError(f"{where}: credentials: `{key}` must be a key of the Secret")
        keys.append(value)
    groups = entry.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise DatasetError(f"{where}: `groups` must be a list of group names")
    path_style = entry.get("path_style", True)
    if not isinstance(path_style, bool):
        raise DatasetError(f"{where}: `path_style` must be true or false")
    return S3Dataset(name, bucket, endpoint.rstrip("/"), region, secret, keys[0], keys[1],
                     tuple(groups), path_style)


def parse(entries: Sequence[Any]) -> list[S3Dataset]:
    """The datasets of the setting, or DatasetError for the first one that can't be used."""
    if not isinstance(entries, list | tuple):
        raise DatasetError("must be a list of datasets")
    found = [parse_one(e, i) for i, e in enumerate(entries)]
    seen: set[str] = set()
    for d in found:
        if d.name in seen or d.name == "default":
            raise DatasetError(f"dataset {d.name!r}: "
                               + ("the name is taken by the AWS default profile"
                                  if d.name == "default" else "the name is used twice"))
        seen.add(d.name)
    return found


def parse_user(text: str, taken: set[str]) -> tuple[list[S3Dataset],
                                                  dict[str, tuple[str, str]], list[str]]:
    """A user's own datasets (their Secret's `datasets.json`): the usable ones, their keys,
    and why the others were left out. `taken`: the admin's names, never taken over."""
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError):  # nested too deep: never a crash of the start
        return [], {}, [f"{USER_FILE} is not JSON"]
    if not isinstance(entries, list):
        return [], {}, [f"{USER_FILE} must be a list of datasets"]
    found: list[S3Dataset] = []
    keys: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    for index, entry in enumerate(entries[:MAX_USER_DATASETS]):
        try:
            if not isinstance(entry, dict):
                raise DatasetError(f"dataset #{index + 1} must be a mapping")
            unknown = set(entry) - USER_KEYS
            if unknown:
                raise DatasetError(f"dataset #{index + 1}: unknown key(s) "
                                   f"{', '.join(sorted(map(str, unknown)))}")
            d = parse_one({**{k: v for k, v in entry.items() if k in KEYS},
                           "credentials": {"secret": "user"}}, index)
            access, secret = entry.get("access_key_id"), entry.get("secret_access_key")
            if not (isinstance(access, str) and CREDENTIAL_RE.fullmatch(access)
                    and isinstance(secret, str) and CREDENTIAL_RE.fullmatch(secret)):
                raise DatasetError(f"dataset {d.name!r}: the keys must be printable ASCII "
                                   "without spaces")
            if d.name in taken or d.name == "default" or d.name in keys:
                raise DatasetError(f"dataset {d.name!r}: the name is taken")
        except DatasetError as e:
            problems.append(str(e))
            continue
        found.append(d)
        keys[d.name] = (access, secret)
    if len(entries) > MAX_USER_DATASETS:
        problems.append(f"only the first {MAX_USER_DATASETS} datasets are used")
    return found, keys, problems


def for_groups(datasets: Sequence[S3Dataset], groups: Sequence[str]) -> list[S3Dataset]:
    """The datasets a user of `groups` gets (a dataset without groups: everyone)."""
    return [d for d in datasets if not d.groups or set(d.groups) & set(groups)]


def files(datasets: Sequence[S3Dataset], keys: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """The Secret's files for `datasets`, with `keys[name] = (access key, secret key)`."""
    config, credentials, rclone, listing = [], [], [], []
    profiles = [(d.name, d) for d in datasets]
    if len(datasets) == 1:
        profiles.append(("default", datasets[0]))
    for profile, d in profiles:
        access, secret = keys[d.name]
        head = "default" if profile == "default" else f"profile {profile}"
        config += [f"[{head}]", f"region = {d.region}", f"endpoint_url = {d.endpoint}"]
        if d.path_style:
            config += ["s3 =", "    addressing_style = path"]
        config.append("")
        credentials += [f"[{profile}]", f"aws_access_key_id = {access}",
                        f"aws_secret_access_key = {secret}", ""]
    for d in datasets:
        access, secret = keys[d.name]
        rclone += [f"[{d.name}]", "type = s3", "provider = Other", "env_auth = false",
                   f"access_key_id = {access}", f"secret_access_key = {secret}",
                   f"endpoint = {d.endpoint}", f"region = {d.region}",
                   f"force_path_style = {'true' if d.path_style else 'false'}", ""]
        listing.append({"name": d.name, "bucket": d.bucket, "endpoint": d.endpoint,
                        "region": d.region, "profile": d.name, "rclone": f"{d.name}:{d.bucket}"})
    return {"aws-config": "\n".join(config), "aws-credentials": "\n".join(credentials),
            "rclone.conf": "\n".join(rclone),
            "datasets.json": json.dumps(listing, indent=2, sort_keys=True) + "\n"}


def env(datasets: Sequence[S3Dataset], mount_dir: str) -> dict[str, str]:
    """The variables a pod gets for `datasets` with the files mounted at `mount_dir`."""
    if not datasets:
        return {}
    base = mount_dir.rstrip("/")
    out = {"AWS_CONFIG_FILE": f"{base}/aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": f"{base}/aws-credentials",
           "RCLONE_CONFIG": f"{base}/rclone.conf",
           "KDASH_DATASETS": ",".join(d.name for d in datasets),
           "KDASH_DATASETS_DIR": base}
    endpoints = {d.endpoint for d in datasets}
    if len(endpoints) == 1:
        out["AWS_ENDPOINT_URL"] = endpoints.pop()
    for d in datasets:
        out[d.env_prefix + "BUCKET"] = d.bucket
        out[d.env_prefix + "PROFILE"] = d.name
        out[d.env_prefix + "ENDPOINT"] = d.endpoint
    return out


def _secret(username: str, namespace: str, name: str, data: Mapping[str, str]) -> dict:
    meta = {"name": name, "namespace": namespace,
            "labels": L.owner_labels(username, COMPONENT),
            "annotations": L.owner_annotations(username)}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def secrets(username: str, namespace: str, secret_name: str, mount_dir: str,
            datasets: Sequence[S3Dataset], keys: Mapping[str, tuple[str, str]]) -> list[dict]:
    """The two Secrets of the user's namespace (empty files when the user has none, so
    keys a user lost access to are overwritten)."""
    return [_secret(username, namespace, secret_name, files(datasets, keys)),
            _secret(username, namespace, env_secret_name(secret_name),
                    env(datasets, mount_dir))]


def env_secret_name(secret_name: str) -> str:
    return f"{secret_name}-env"


def read_keys(secret: Mapping | None, d: S3Dataset) -> tuple[str, str] | str:
    """(access key, secret key) from the hub's Secret, or why they can't be used."""
    if secret is None:
        return f"its credentials Secret {d.secret!r} is not in the hub's namespace"
    data = secret.get("data") or {}
    found = []
    for key in (d.access_key, d.secret_key):
        try:
            value = base64.b64decode(data.get(key) or "", validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            value = ""
        if not CREDENTIAL_RE.fullmatch(value):
            return (f"key {key!r} of its credentials Secret {d.secret!r} is missing or not "
                    "printable ASCII without spaces")
        found.append(value)
    return found[0], found[1]


def pod_parts(secret_name: str, mount_dir: str) -> tuple[V1Volume, V1VolumeMount,
                                                          V1EnvFromSource]:
    """The volume, mount and envFrom that give a container the datasets."""
    volume = V1Volume(name=VOLUME, secret=V1SecretVolumeSource(
        secret_name=secret_name, optional=True,
        items=[V1KeyToPath(key=f, path=f) for f in FILES]))
    mount = V1VolumeMount(name=VOLUME, mount_path=mount_dir, read_only=True)
    env_from = V1EnvFromSource(secret_ref=V1SecretEnvSource(
        name=env_secret_name(secret_name), optional=True))
    return volume, mount, env_from


class S3DatasetSettings(Configurable):
    """Mixed into KDashSpawner; configure as `c.KDashSpawner.s3_datasets` and so on."""

    s3_datasets = List(
        [], config=True,
        help="S3 datasets for notebooks and side services (templates with `datasets: true`):"
             " [{name, bucket, endpoint, region (default us-east-1), path_style (default"
             " true), groups (default: everyone), credentials: {secret: NAME, access_key:"
             " KEY (default AWS_ACCESS_KEY_ID), secret_key: KEY (default"
             " AWS_SECRET_ACCESS_KEY)}}]. The credentials Secret is read from the hub's"
             " namespace at each start and copied into the user's namespace as files"
             " (aws-config/aws-credentials profiles, rclone.conf remotes) and variables"
             " (kdash_hub.spawner.datasets). Names: lowercase words joined by '-'.",
    )
    s3_datasets_secret = Unicode(
        "kdash-datasets", config=True,
        help="The Secret of the user's namespace holding the datasets' files; its variables"
             " are in `<name>-env`. The launcher's `datasets_secret` must match.",
    )
    s3_datasets_dir = Unicode(
        "/etc/kdash/datasets", config=True,
        help="Where notebooks (and side services) find the datasets' files.",
    )
    s3_datasets_user_secret = Unicode(
        "", config=True,
        help="Let users add S3 datasets of their own: the name of a Secret in their"
             " namespace whose key `datasets.json` lists them ([{name, bucket, endpoint,"
             " region, path_style, access_key_id, secret_access_key}]); read at each start,"
             " checked like the admin's, never taking an admin dataset's name. Empty: users"
             " can't add datasets.",
    )

    @validate("s3_datasets")
    def _check_s3_datasets(self, proposal: dict) -> list:
        try:
            parse(proposal["value"])
        except DatasetError as e:
            raise TraitError(f"KDashSpawner.s3_datasets: {e}") from None
        return proposal["value"]

    @validate("s3_datasets_secret", "s3_datasets_user_secret")
    def _check_secret_name(self, proposal: dict) -> str:
        name, trait = proposal["value"], proposal["trait"].name
        if trait == "s3_datasets_user_secret" and name == "":
            return name
        if not K8S_NAME_RE.fullmatch(name) or len(name) > 240:
            raise TraitError(f"KDashSpawner.{trait}: {name!r} is not a Secret name")
        if trait == "s3_datasets_user_secret" and name in (
                self.s3_datasets_secret, env_secret_name(self.s3_datasets_secret)):
            raise TraitError(f"KDashSpawner.{trait}: {name!r} is the hub's own Secret")
        return name

    @validate("s3_datasets_dir")
    def _check_dir(self, proposal: dict) -> str:
        path = proposal["value"]
        if not path.startswith("/") or ".." in path.split("/") or any(
                c.isspace() or c == ":" for c in path):
            raise TraitError(f"KDashSpawner.s3_datasets_dir: {path!r} must be an absolute path")
        return path

    async def s3_dataset_objects(self) -> list[dict]:
        """The user's dataset Secrets for the bundle (none when no dataset is declared)."""
        declared = parse(self.s3_datasets)
        if not self._s3_datasets_on():
            return []
        mine = for_groups(declared, self.groups())  # type: ignore[attr-defined]
        hub_ns = self.hub_namespace  # type: ignore[attr-defined]
        read: dict[str, Any] = {}
        for name in sorted({d.secret for d in mine}):
            read[name] = await self.kube.get("Secret", name, hub_ns)  # type: ignore[attr-defined]
        usable, keys = [], {}
        for d in mine:
            found = read_keys(read[d.secret], d)
            if isinstance(found, str):
                self.log.warning("S3 dataset %s left out for %s: %s", d.name,  # type: ignore
                                 self.user.name, found)  # type: ignore[attr-defined]
                continue
            usable.append(d)
            keys[d.name] = found
        if self.s3_datasets_user_secret:
            own, own_keys, problems = parse_user(await self._s3_user_file(),
                                                 {d.name for d in declared})
            for problem in problems:
                self.log.warning("%s's own S3 datasets: %s", self.user.name,  # type: ignore
                                 problem)
            usable += own
            keys.update(own_keys)
        out = secrets(self.user.name, self.namespace,  # type: ignore[attr-defined]
                      self.s3_datasets_secret, self.s3_datasets_dir, usable, keys)
        for obj in out:
            await self._s3_prune(obj)
        return out

    async def _s3_prune(self, desired: dict) -> None:
        """Take out of the user's copy the keys it should no longer have (a dataset the
        user lost, or one they added): the bundle's merge patch only adds and updates."""
        from kubernetes_asyncio.client.exceptions import ApiException

        meta = desired["metadata"]
        try:
            current = await self.kube.get("Secret", meta["name"],  # type: ignore[attr-defined]
                                          meta["namespace"])
        except ApiException as e:
            if e.status != 403:  # no rights there yet: a first start, nothing to prune
                raise
            return
        stale = set((current or {}).get("data") or {}) - set(desired["data"])
        if stale:
            await self.kube.patch("Secret", meta["name"],  # type: ignore[attr-defined]
                                  meta["namespace"], {"data": dict.fromkeys(sorted(stale))})

    def _s3_datasets_on(self) -> bool:
        """Datasets declared or users allowed to add them, in namespaces of their own (a
        shared namespace would share the keys: never)."""
        return bool(self.s3_datasets or self.s3_datasets_user_secret) and bool(
            self.enable_user_namespaces)  # type: ignore[attr-defined]

    async def _s3_user_file(self) -> str:
        """The user's own `datasets.json` ("[]" without one; no rights there yet, as
        before the first start made the namespace, counts as none)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            found = await self.kube.get("Secret", self.s3_datasets_user_secret,  # type: ignore
                                        self.namespace)  # type: ignore[attr-defined]
        except ApiException as e:
            if e.status != 403:
                raise
            found = None
        raw = ((found or {}).get("data") or {}).get(USER_FILE)
        try:
            return base64.b64decode(raw or "", validate=True).decode() or "[]"
        except (ValueError, UnicodeDecodeError):
            return "not json"

    def add_s3_datasets(self, pod: Any) -> None:
        """The notebook container gets the files and variables (when datasets are set)."""
        if not self._s3_datasets_on():
            return
        volume, mount, env_from = pod_parts(self.s3_datasets_secret, self.s3_datasets_dir)
        container = pod.spec.containers[0]
        pod.spec.volumes = [*(pod.spec.volumes or []), volume]
        container.volume_mounts = [*(container.volume_mounts or []), mount]
        container.env_from = [*(container.env_from or []), env_from]
