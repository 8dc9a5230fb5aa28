"""Connection details in the owner's notebook, as environment variables or as files
(opt-in per instance, one or the other, like Kubeflow's PodDefaults).

The launcher keeps two Secrets per user in their namespace: `kdash-notebook-env`, which the
spawner adds to every notebook pod (`envFrom`, optional), and `kdash-notebook-files`, which
it mounts read-only at FILES_DIR (KDashSpawner.notebook_files_dir): `<instance>.json` and
`<instance>.env` per instance. Both take effect at the next notebook start (a real kubelet
also refreshes a running pod's Secret volume, within a minute or two). Both are rebuilt
whole from the user's verified records: which instances and how (the signed
`notebook_env`/`notebook_file` flags), their names (the signed instance name, so a file
name is never more than [a-z0-9-] and a suffix) and which variables hold the user and
password (the template as the launcher loaded it). The launcher never reads them back: a
user who edits one changes only their own notebook. The culler, which has no catalog to
rebuild them with, only takes a deleted instance's keys out (`forget`).
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.kube import JSON_PATCH, KubeResources, api_error_message, resource_for

from . import lifecycle
from .connection import connection_url, describe_connection
from .instances import Actor, InstanceManager, LauncherError, untrusted, user_errors
from .records import DELETING, InstanceRecord, RecordInvalid

log = logging.getLogger("kdash_hub.launcher")
ENV_SECRET = "kdash-notebook-env"  # KDashSpawner.notebook_env_secret's default
ENV_COMPONENT = "launcher-notebook-env"
FIELDS = ("HOST", "PORT", "USER", "PASSWORD", "DATABASE", "URL")  # no "_" in any
FILES_SECRET = "kdash-notebook-files"  # KDashSpawner.notebook_files_secret's default
FILES_COMPONENT = "launcher-notebook-files"
FILES_DIR = "/etc/kdash/services"  # KDashSpawner.notebook_files_dir's default
MODES = ("env", "file")  # how an instance's details reach the notebook


def env_prefix(instance: str) -> str:
    """KDASH_<NAME>_: instance names are [a-z0-9-] and fields have no "_", so the map
    from (instance, field) to variable name is injective."""
    return "KDASH_" + instance.upper().replace("-", "_") + "_"


def env_names(manager: InstanceManager, rec: InstanceRecord) -> list[str]:
    """The variables an instance gives the notebook (the password's name, not its value)."""
    return sorted(instance_env(manager, rec, None))


def file_names(instance: str) -> tuple[str, str]:
    """The files of an instance in FILES_DIR (Secret keys: [a-z0-9-] and a suffix)."""
    return f"{instance}.json", f"{instance}.env"


def _fields(manager: InstanceManager, rec: InstanceRecord,
            secret: dict[str, Any] | None) -> dict[str, str]:
    """FIELDS of one instance that it has; the password (and a URL with it) from
    `secret`, its verified record Secret."""
    info = describe_connection(manager, rec, secret or {})
    if not info["host"]:
        return {}
    values = {"HOST": info["host"], "PORT": str(info["port"]), "USER": info["user"],
              "PASSWORD": info["password"] if info["has_password"] else None,
              "DATABASE": info["database"], "URL": connection_url(manager, rec, info)}
    if secret is None and info["has_password"]:
        values["PASSWORD"] = ""
    return {k: v for k, v in values.items() if isinstance(v, str)}


def instance_env(manager: InstanceManager, rec: InstanceRecord,
                 secret: dict[str, Any] | None) -> dict[str, str]:
    """The variables of one instance (`_fields`, named by `env_prefix`)."""
    prefix = env_prefix(rec.name)
    return {prefix + k: v for k, v in _fields(manager, rec, secret).items()}


def instance_files(manager: InstanceManager, rec: InstanceRecord,
                   secret: dict[str, Any] | None) -> dict[str, str]:
    """The files of one instance: JSON (lower-case fields, the port a number) and .env
    (the variables of the env form, shell-quoted: `source` and python-dotenv read it)."""
    fields = _fields(manager, rec, secret)
    if not fields:
        return {}
    doc: dict[str, Any] = {"instance": rec.name, "template": rec.template,
                           **{k.lower(): v for k, v in fields.items()}}
    doc["port"] = int(doc["port"]) if doc["port"].isdigit() else doc["port"]
    prefix = env_prefix(rec.name)
    dotenv = "".join(f"{prefix}{k}={shlex.quote(v)}\n" for k, v in fields.items())
    json_name, env_name = file_names(rec.name)
    return {json_name: json.dumps(doc, indent=2, sort_keys=True) + "\n",
            env_name: f"# {rec.name} ({rec.template}), written by the launcher\n" + dotenv}


def mode_of(rec: InstanceRecord) -> str | None:
    """How the record's details reach the notebook: "env", "file" or None (not at all)."""
    return "file" if rec.notebook_file else "env" if rec.notebook_env else None


async def sync(manager: InstanceManager, owner: str) -> dict[str, str]:
    """Write `owner`'s env and files Secrets from their verified records (each deleted when
    no instance is in it); returns their keys and values (for the caller's checks only)."""
    namespace = manager.settings.user_namespace(owner)
    env: dict[str, str] = {}
    files: dict[str, str] = {}
    for secret in await lifecycle.record_secrets(manager.kube, owner, namespace):
        try:
            rec = InstanceRecord.from_secret(secret, manager.signer)
        except RecordInvalid:
            continue  # listed by labels a user can set: only a verified record counts
        if rec.owner != owner or rec.namespace != namespace or rec.phase == DELETING:
            continue
        if rec.notebook_file:
            files.update(instance_files(manager, rec, secret))
        elif rec.notebook_env:
            env.update(instance_env(manager, rec, secret))
    for name, component, data in ((ENV_SECRET, ENV_COMPONENT, env),
                                  (FILES_SECRET, FILES_COMPONENT, files)):
        try:
            await _write(manager, namespace, owner, name, component, data)
        except ApiException as e:
            if e.status != 403:
                raise
            raise _refused(namespace, name, api_error_message(e)) from None
    return {**env, **files}


def _refused(namespace: str, name: str, detail: str) -> LauncherError:
    log.warning("%s/%s not written: %s", namespace, name, detail)
    if "quota" in detail.lower():
        return LauncherError(409, f"your namespace's quota has no room for the Secret"
                                  f" {name} ({detail}); delete something there and try"
                                  " again")
    # the admission policy: the pack changes only Secrets carrying its labels
    return LauncherError(409, f"a Secret {name} in your namespace that the launcher didn't"
                              " make (or whose labels were changed) is in the way; delete it"
                              f" (kubectl delete secret {name}) and try again")


async def _write(manager: InstanceManager, namespace: str, owner: str, name: str,
                 component: str, data: dict[str, str]) -> None:
    if not data:
        await manager.kube.delete("Secret", name, namespace)  # gone already: fine
        return
    obj = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": L.owner_labels(owner, component),
                     "annotations": L.owner_annotations(owner)},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())},
    }
    try:
        await manager.kube.create(obj)
    except ApiException as e:
        if e.status != 409:
            raise
        # there already: labels and data replaced whole (a JSON patch: the launcher's
        # role has patch, not update), so keys a user added are gone too
        await manager.kube.patch("Secret", name, namespace, [
            {"op": "add", "path": "/metadata/labels", "value": obj["metadata"]["labels"]},
            {"op": "add", "path": "/data", "value": obj["data"]}], content_type=JSON_PATCH)


async def set_notebook_env(manager: InstanceManager, actor: Actor, owner: str, name: str,
                           enabled: bool, *, as_: str = "env", is_user: bool = True,
                           ) -> dict[str, Any]:
    """Put the instance's details in the owner's notebook (`as_` "env": variables, "file":
    files) or take them out (the owner only: an admin 403, anyone else 404 as for a
    missing instance). One form at a time: choosing one drops the other."""
    if as_ not in MODES:
        raise LauncherError(400, f"'as' is one of {', '.join(MODES)}")
    _, rec = await manager.record_for(actor, owner, name)
    if actor.name != owner or not is_user:
        raise LauncherError(403, f"only {owner} decides what goes into their notebook")
    if rec.phase == DELETING:
        raise LauncherError(409, f"instance {name!r} is being deleted")
    if not rec.proxy or not rec.proxy.get("service"):
        raise LauncherError(400, f"instance {name!r} has no Service to connect to")
    before = (rec.notebook_env, rec.notebook_file)

    def change(r: InstanceRecord) -> None:
        r.notebook_env = enabled and as_ == "env"
        r.notebook_file = enabled and as_ == "file"

    async with user_errors(f"updating your notebook's details for {name!r}"):
        try:
            rec = await lifecycle.update_record(manager.kube, rec.namespace, name, change,
                                                manager.signer)
        except RecordInvalid:
            raise untrusted(name) from None
        except lifecycle.InstanceNotFound:
            raise LauncherError(404, f"instance {name!r} is gone") from None
        try:
            await sync(manager, owner)
        except LauncherError:  # not written: the record says what the notebook gets

            def undo(r: InstanceRecord) -> None:
                r.notebook_env, r.notebook_file = before

            await lifecycle.update_record(manager.kube, rec.namespace, name, undo,
                                          manager.signer)
            await sync_quietly(manager, owner)  # the other Secret as the record says
            raise
    names = env_names(manager, rec)
    files = [f"{FILES_DIR}/{f}" for f in file_names(name)]
    if not enabled:
        message = (f"{name}'s details are removed from your notebook from its next start")
    elif as_ == "file":
        message = (f"{' and '.join(files)} will be in your notebook (read-only) from its"
                   " next start; a running notebook's kubelet may bring them sooner")
    else:
        message = (f"{', '.join(names)} will be in your notebook's environment from its"
                   " next start (stop and start your server to apply it now)")
    return {"name": name, "enabled": enabled, "as": mode_of(rec), "secret": ENV_SECRET,
            "variables": names, "files_secret": FILES_SECRET, "files": files,
            "message": message}


async def forget(kube: KubeResources, namespace: str, owner: str, instance: str,
                 attempts: int = 5) -> list[str]:
    """Take a deleted instance's keys out of `owner`'s two Secrets (the culler's part: it
    has no catalog to rebuild them with); a Secret left empty is deleted. Only keys that
    name this instance are touched (FIELDS under its env_prefix, its file_names), only in
    Secrets that carry the pack's labels for `owner`, and every write is conditional on
    the version read, so a launcher write in between is never undone. Returns the keys
    taken out."""
    removed: list[str] = []
    for name, component, keys in (
            (ENV_SECRET, ENV_COMPONENT, [env_prefix(instance) + f for f in FIELDS]),
            (FILES_SECRET, FILES_COMPONENT, list(file_names(instance)))):
        for attempt in range(attempts):
            try:
                gone = await _forget_once(kube, namespace, owner, name, component, keys)
                removed += gone
                break
            except ApiException as e:
                if e.status == 404:
                    break
                if e.status != 409 or attempt == attempts - 1:
                    raise
    return removed


async def _forget_once(kube: KubeResources, namespace: str, owner: str, name: str,
                       component: str, keys: list[str]) -> list[str]:
    secret = await kube.get("Secret", name, namespace)
    if secret is None:
        return []
    meta = secret.get("metadata") or {}
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in L.owner_labels(owner, component).items()):
        log.warning("%s/%s is not the launcher's (its labels were changed): left alone",
                    namespace, name)
        return []
    data = secret.get("data") or {}
    gone = [k for k in keys if k in data]
    if not gone:
        return []
    version = meta.get("resourceVersion", "")
    if set(data) <= set(gone):
        await kube.request("DELETE", resource_for("Secret").path(namespace, name), body={
            "kind": "DeleteOptions", "apiVersion": "v1",
            "preconditions": {"resourceVersion": version}})
    else:
        await kube.patch("Secret", name, namespace, {
            "metadata": {"resourceVersion": version}, "data": {k: None for k in gone}})
    log.info("%s taken out of %s/%s", ", ".join(gone), namespace, name)
    return gone


async def sync_quietly(manager: InstanceManager, owner: str) -> None:
    """`sync` after a delete: a failure is logged, never the delete's error."""
    try:
        await sync(manager, owner)
    except Exception as e:  # noqa: BLE001 - the delete is done; say so in the log
        detail = api_error_message(e) if isinstance(e, ApiException) else repr(e)
        log.warning("notebook details of %s not updated: %s", owner, detail)
