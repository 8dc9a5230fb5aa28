"""Connection details in the owner's notebook, as environment variables (opt-in per
instance, like Kubeflow's PodDefaults).

The launcher keeps one Secret per user, `kdash-notebook-env` in their namespace, and the
spawner adds it to every notebook pod (`envFrom`, optional), so it takes effect at the
next notebook start. Its content is rebuilt whole from the user's verified records: which
instances (the signed `notebook_env` flag), their names (the signed instance name) and
which variables hold the user and password (the template as the launcher loaded it). The
launcher never reads this Secret back: a user who edits it changes only their own notebook.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.kube import JSON_PATCH, api_error_message

from . import lifecycle
from .connection import connection_url, describe_connection
from .instances import Actor, InstanceManager, LauncherError, untrusted, user_errors
from .records import DELETING, InstanceRecord, RecordInvalid

log = logging.getLogger("kdash_hub.launcher")
ENV_SECRET = "kdash-notebook-env"  # KDashSpawner.notebook_env_secret's default
ENV_COMPONENT = "launcher-notebook-env"
FIELDS = ("HOST", "PORT", "USER", "PASSWORD", "DATABASE", "URL")  # no "_" in any


def env_prefix(instance: str) -> str:
    """KDASH_<NAME>_: instance names are [a-z0-9-] and fields have no "_", so the map
    from (instance, field) to variable name is injective."""
    return "KDASH_" + instance.upper().replace("-", "_") + "_"


def env_names(manager: InstanceManager, rec: InstanceRecord) -> list[str]:
    """The variables an instance gives the notebook (the password's name, not its value)."""
    return sorted(instance_env(manager, rec, None))


def instance_env(manager: InstanceManager, rec: InstanceRecord,
                 secret: dict[str, Any] | None) -> dict[str, str]:
    """The variables of one instance; the password (and a URL with it) from `secret`,
    its verified record Secret."""
    info = describe_connection(manager, rec, secret or {})
    if not info["host"]:
        return {}
    values = {"HOST": info["host"], "PORT": str(info["port"]), "USER": info["user"],
              "PASSWORD": info["password"] if info["has_password"] else None,
              "DATABASE": info["database"], "URL": connection_url(manager, rec, info)}
    if secret is None and info["has_password"]:
        values["PASSWORD"] = ""
    prefix = env_prefix(rec.name)
    return {prefix + k: v for k, v in values.items() if isinstance(v, str)}


async def sync(manager: InstanceManager, owner: str) -> dict[str, str]:
    """Write `owner`'s env Secret from their verified records (deleted when no instance is
    opted in); returns the variables (values included: for the caller's checks only)."""
    namespace = manager.settings.user_namespace(owner)
    env: dict[str, str] = {}
    for secret in await lifecycle.record_secrets(manager.kube, owner, namespace):
        try:
            rec = InstanceRecord.from_secret(secret, manager.signer)
        except RecordInvalid:
            continue  # listed by labels a user can set: only a verified record counts
        if rec.owner != owner or rec.namespace != namespace or not rec.notebook_env \
                or rec.phase == DELETING:
            continue
        env.update(instance_env(manager, rec, secret))
    try:
        await _write(manager, namespace, owner, env)
    except ApiException as e:
        if e.status != 403:
            raise
        detail = api_error_message(e)
        log.warning("%s/%s not written: %s", namespace, ENV_SECRET, detail)
        if "quota" in detail.lower():
            raise LauncherError(409, f"your namespace's quota has no room for the Secret"
                                     f" {ENV_SECRET} ({detail}); delete something there"
                                     " and try again") from None
        # the admission policy: the pack changes only Secrets carrying its labels
        raise LauncherError(409, f"a Secret {ENV_SECRET} in your namespace that the launcher"
                                 " didn't make (or whose labels were changed) is in the way;"
                                 f" delete it (kubectl delete secret {ENV_SECRET}) and try"
                                 " again") from None
    return env


async def _write(manager: InstanceManager, namespace: str, owner: str,
                 env: dict[str, str]) -> None:
    if not env:
        await manager.kube.delete("Secret", ENV_SECRET, namespace)  # gone already: fine
        return
    obj = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": ENV_SECRET, "namespace": namespace,
                     "labels": L.owner_labels(owner, ENV_COMPONENT),
                     "annotations": L.owner_annotations(owner)},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(env.items())},
    }
    try:
        await manager.kube.create(obj)
    except ApiException as e:
        if e.status != 409:
            raise
        # there already: labels and data replaced whole (a JSON patch: the launcher's
        # role has patch, not update), so keys a user added are gone too
        await manager.kube.patch("Secret", ENV_SECRET, namespace, [
            {"op": "add", "path": "/metadata/labels", "value": obj["metadata"]["labels"]},
            {"op": "add", "path": "/data", "value": obj["data"]}], content_type=JSON_PATCH)


async def set_notebook_env(manager: InstanceManager, actor: Actor, owner: str, name: str,
                           enabled: bool, *, is_user: bool = True) -> dict[str, Any]:
    """Turn the instance's variables in the owner's notebook on or off (the owner only:
    an admin 403, anyone else 404 as for a missing instance)."""
    _, rec = await manager.record_for(actor, owner, name)
    if actor.name != owner or not is_user:
        raise LauncherError(403, f"only {owner} decides what goes into their notebook")
    if rec.phase == DELETING:
        raise LauncherError(409, f"instance {name!r} is being deleted")
    if not rec.proxy or not rec.proxy.get("service"):
        raise LauncherError(400, f"instance {name!r} has no Service to connect to")

    def change(r: InstanceRecord) -> None:
        r.notebook_env = enabled

    async with user_errors(f"updating your notebook's variables for {name!r}"):
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
                r.notebook_env = not enabled

            await lifecycle.update_record(manager.kube, rec.namespace, name, undo,
                                          manager.signer)
            raise
    names = env_names(manager, rec)
    return {"name": name, "enabled": enabled, "secret": ENV_SECRET, "variables": names,
            "message": (f"{', '.join(names)} will be in your notebook's environment"
                        if enabled else f"{name}'s variables are removed from your notebook")
            + " from its next start (stop and start your server to apply it now)"}


async def sync_quietly(manager: InstanceManager, owner: str) -> None:
    """`sync` after a delete: a failure is logged, never the delete's error."""
    try:
        await sync(manager, owner)
    except Exception as e:  # noqa: BLE001 - the delete is done; say so in the log
        detail = api_error_message(e) if isinstance(e, ApiException) else repr(e)
        log.warning("notebook variables of %s not updated: %s", owner, detail)
