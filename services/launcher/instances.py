"""Launch, list, inspect and change instances, for one user (or an admin) at a time.

Every operation takes the acting user; an instance of someone else is reported as not
found (never "forbidden", which would confirm it exists) unless the actor is an admin and
admins are allowed. A launch creates the record first (its name is the lock), then one
request per object; any failure deletes what was made, so nothing is left half-created.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlparse

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.durations import format_duration, parse_duration
from kdash_hub.kube import KubeResources, api_error_message, api_error_reason
from kdash_hub.templating import (
    Catalog,
    RenderError,
    Template,
    render_objects,
    resolve_values,
)
from kdash_hub.templating.batch import cap_ttl_after_finished

from . import datasets, lifecycle, publicurl
from .batch import (
    BatchUnavailable,
    batch_status,
    batch_summary,
    check_served,
    log_pods,
    pod_security_problems,
)
from .hubapi import HubClient, HubUnavailable
from .records import (
    CREATING,
    DELETING,
    READY,
    RECORD_PREFIX,
    InstanceRecord,
    RecordInvalid,
    is_instance_name,
    iso,
    now_utc,
    objects_digest,
    record_name,
)
from .settings import LauncherSettings
from .status import ClusterView, event_time, instance_status
from .targets import Target, TargetError, find_target

log = logging.getLogger("kdash_hub.launcher")
MAX_SECONDS = 10 * 366 * 86400  # the longest lifetime anyone may ask for (max_ttl "" too)
# an extend that would gain less than this is refused: the instance is at its cap already
AT_CAP_SECONDS = 60
WORKLOAD_SELECTOR = f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.COMPONENT}=launcher"


class LauncherError(Exception):
    """An error for the person who asked: an HTTP status and a message saying what to do."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


@contextlib.asynccontextmanager
async def user_errors(what: str) -> AsyncIterator[None]:
    """Whatever goes wrong while `what`, the person gets a sentence (JSON in the API, never
    a bare 500) and the log the detail."""
    try:
        yield
    except LauncherError:
        raise
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        log.error("%s: the Kubernetes API didn't answer: %s: %s", what, type(e).__name__, e)
        raise LauncherError(503, f"the Kubernetes API didn't answer while {what}; try again"
                                 " in a minute (if it keeps failing, tell an admin: the"
                                 " launcher's log has the detail)") from None
    except ApiException as e:
        log.error("%s: %s", what, api_error_message(e))
        raise LauncherError(502, f"Kubernetes failed while {what}: {api_error_message(e)};"
                                 " try again in a minute") from None
    except Exception:
        log.exception("%s failed", what)
        raise LauncherError(500, f"the launcher failed unexpectedly while {what}; tell an"
                                 " admin (the launcher's log has the detail)") from None


def not_found(owner: str, name: str) -> LauncherError:
    return LauncherError(404, f"no instance {name!r} of user {owner!r}")


def being_deleted(name: str) -> LauncherError:
    return LauncherError(409, f"instance {name!r} is being deleted; it can't be changed any"
                              " more (it disappears from the list when the delete is done)")


def untrusted(name: str) -> LauncherError:
    return LauncherError(409, f"the record of instance {name!r} was changed outside the"
                              " launcher (its signature doesn't verify), so the launcher no"
                              " longer acts on it; ask an admin to look at it")


@dataclass
class Actor:
    """Who is asking: a hub user name and whether they are a hub admin."""

    name: str
    admin: bool = False


class InstanceManager:
    def __init__(self, kube: KubeResources, settings: LauncherSettings, catalog: Catalog,
                 hub: HubClient | None = None):
        self.kube = kube
        self.hub = hub  # asks the hub for a missing namespace bundle
        self.settings = settings
        self.catalog = catalog
        self.signer = settings.signer()
        self.pod_networks = settings.pod_networks()
        # (namespace, name) of the launches this process is making now: the reconciler
        # leaves their `creating` records alone
        self.launching: set[tuple[str, str]] = set()
        # one lock per instance a delete or the reconciler is acting on in this process:
        # a delete waits for a rollforward under way, the reconciler skips a held one
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def busy(self, namespace: str, name: str) -> bool:
        """This process is launching, deleting or reconciling the instance now."""
        key = (namespace, name)
        held = self._locks.get(key)
        return key in self.launching or (held is not None and held[0].locked())

    def busy_keys(self) -> set[tuple[str, str]]:
        """(namespace, name) of every instance `busy` is True for."""
        return self.launching | {k for k, (lock, _) in self._locks.items() if lock.locked()}

    @contextlib.asynccontextmanager
    async def acting_on(self, namespace: str, name: str) -> AsyncIterator[None]:
        """Hold the instance's lock (in this process) while changing what it is made of."""
        key = (namespace, name)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    # --- access -----------------------------------------------------------------------
    def can_manage(self, actor: Actor, owner: str) -> bool:
        return actor.name == owner or (actor.admin and self.settings.admin_access)

    def can_proxy(self, actor: Actor, owner: str) -> bool:
        return actor.name == owner or (actor.admin and self.settings.admin_proxy_access)

    async def record_for(self, actor: Actor, owner: str, name: str) -> tuple[dict, InstanceRecord]:
        """The record of `owner`'s instance `name` if `actor` may see it; else 404."""
        if not self.can_manage(actor, owner) or not is_instance_name(name):
            raise not_found(owner, name)
        namespace = self.settings.user_namespace(owner)
        try:
            secret, rec = await lifecycle.read_record(self.kube, namespace, name, self.signer)
        except lifecycle.InstanceNotFound:
            raise not_found(owner, name) from None
        except RecordInvalid:
            raise untrusted(name) from None
        if rec.owner != owner or rec.namespace != namespace:
            raise not_found(owner, name)
        return secret, rec

    # --- values ---------------------------------------------------------------------------
    def automatic_values(self, username: str, name: str) -> dict[str, str]:
        s = self.settings
        public = s.public_url.rstrip("/")
        return {
            "NAME": name, "NAMESPACE": s.user_namespace(username), "USERNAME": username,
            "HOSTNAME": urlparse(public).hostname or "" if public else "",
            "URL": self.instance_url(username, name),
            "PRIVATE_DIR": s.private_dir, "SHARED_DIR": s.shared_dir,
            "PRIVATE_VOLUME": s.private_volume(username),
            "PRIVATE_SUBPATH": s.private_sub_path(username),
            "SHARED_VOLUME": s.shared_volume_claim,
            "REGISTRY": s.registry, "PATH_PREFIX": self.path_prefix(username, name),
        }

    def path_prefix(self, owner: str, name: str) -> str:
        """The proxy path of an instance, without the trailing slash."""
        return f"{self.settings.service_prefix}proxy/{quote(owner, safe='@')}/{name}"

    def instance_url(self, owner: str, name: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}{self.path_prefix(owner, name)}/"

    def render(self, template: Template, username: str, name: str,
               values: dict[str, Any] | None) -> tuple[list[dict], Any]:
        """Objects and resolved values for a launch (raises RenderError)."""
        resolved = resolve_values(template, values, self.automatic_values(username, name))
        objects = render_objects(
            template, resolved.values, namespace=self.settings.user_namespace(username),
            username=username, instance=name, allowed_kinds=self.settings.allowed_kinds,
        )
        objects += publicurl.ingress_objects(self.settings, template, username, name, objects)
        if template.datasets and self.settings.datasets_secret:
            objects = datasets.attach(objects, self.settings.datasets_secret,
                                      self.settings.datasets_dir)
        return objects, resolved

    # --- launch ---------------------------------------------------------------------------
    def _ttl(self, template: Template, requested: Any) -> int | None:
        """Seconds to live: the request's, else the template's, else default_ttl; with a
        max_ttl every instance expires within it (a template default is capped to it)."""
        try:
            max_ttl = parse_duration(self.settings.max_ttl)
            if requested in (None, ""):
                ttl = template.ttl or parse_duration(self.settings.default_ttl)
                return min(ttl or max_ttl, max_ttl) if max_ttl else ttl
            ttl = parse_duration(requested)
        except (ValueError, OverflowError) as e:
            raise LauncherError(400, f"ttl: {e}") from None
        if ttl and ttl > MAX_SECONDS:
            raise LauncherError(400, "ttl: at most 10 years")
        if max_ttl and not ttl:
            raise LauncherError(400, f"ttl: instances expire here, at most after"
                                     f" {format_duration(max_ttl)}")
        if ttl and max_ttl and ttl > max_ttl:
            raise LauncherError(400, f"ttl: at most {format_duration(max_ttl)}")
        return ttl

    def _plan(self, template: Template, username: str, name: str, values: Any,
              ttl_seconds: int | None) -> tuple[InstanceRecord, list[dict], Any]:
        """The record and objects of a launch (raises LauncherError 400 for bad values)."""
        try:
            objects, resolved = self.render(template, username, name, values)
        except RenderError as e:
            raise LauncherError(400, "; ".join(e.messages)) from None
        try:
            job_ttl = parse_duration(self.settings.max_job_ttl_after_finished)
        except (ValueError, OverflowError):
            job_ttl = None
        for obj in objects:
            cap_ttl_after_finished(obj, job_ttl)
        now = now_utc()
        automatic = self.automatic_values(username, name)
        record = InstanceRecord(
            namespace=self.settings.user_namespace(username), name=name, owner=username,
            template=template.id, template_name=template.name, created_at=now,
            renewed_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds) if ttl_seconds else None,
            expiry=template.expiry, ttl=ttl_seconds, phase=CREATING,
            objects_mac=objects_digest(objects, self.signer),
            max_ttl=parse_duration(self.settings.max_ttl),
            objects=[{"kind": o["kind"], "name": o["metadata"]["name"], "uid": ""}
                     for o in objects],
            replicas={f"{o['kind']}/{o['metadata']['name']}": (o.get("spec") or {}).get(
                "replicas", 1) for o in objects if o["kind"] in lifecycle.SCALABLE},
            values={k: v for k, v in resolved.public.items() if k not in automatic},
            proxy=proxy_target(template, objects),
        )
        return record, objects, resolved

    @staticmethod
    def _free_name(base: str, taken: set[str]) -> str:
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base[:36].rstrip('-')}-{n}"
        return name

    async def launch(self, actor: Actor, template_id: Any, values: Any = None,
                     name: Any = None, ttl: Any = None) -> dict[str, Any]:
        """Make an instance: the record (`creating`), its objects, the record sealed."""
        async with user_errors(f"launching {template_id!r}"):
            return await self._launch(actor, template_id, values, name, ttl)

    async def _launch(self, actor: Actor, template_id: Any, values: Any, name: Any,
                      ttl: Any) -> dict[str, Any]:
        if not isinstance(template_id, str) or not template_id:
            raise LauncherError(400, "template is required")
        template = self.catalog.get(template_id)
        if template is None:
            raise LauncherError(404, f"no template {template_id!r}")
        if values is not None and not isinstance(values, dict):
            raise LauncherError(400, "values must be an object of variable names to values")
        if name not in (None, "") and not is_instance_name(name):
            raise LauncherError(400, "name: use 1-40 lowercase letters, digits and '-', starting"
                                     " with a letter")
        ttl_seconds = self._ttl(template, ttl)
        username = actor.name
        namespace = self.settings.user_namespace(username)
        existing, invalid = await lifecycle.list_records_checked(
            self.kube, username, namespace, self.signer)
        if template.singleton:
            same = [r.name for r in existing if r.template == template.id]
            if same:
                raise LauncherError(409, f"{template.name} allows one instance per user;"
                                         f" you already have {same[0]!r}")
        # records that don't verify still hold their names and count against the limit
        count = len(existing) + len(invalid)
        if count >= self.settings.max_instances_per_user:
            raise LauncherError(409, f"you have {count} instances, the most allowed;"
                                     " delete one first")
        taken = {r.name for r in existing} | {
            r.record.removeprefix(RECORD_PREFIX) for r in invalid}
        auto_name = not name
        if auto_name:
            name = self._free_name(template.default_name, taken)
        elif name in taken:
            raise LauncherError(409, f"you already have an instance named {name!r}")
        # bad values are a 400 before anything is made
        record, objects, resolved = self._plan(template, username, name, values, ttl_seconds)
        try:  # kinds this cluster doesn't serve (Argo without its CRDs): also before
            await check_served(self.kube, {o["kind"] for o in objects})
        except BatchUnavailable as e:
            raise LauncherError(400, str(e)) from None
        try:  # a public host an Ingress already holds: before anything is made
            await publicurl.check_hosts_free(self.kube, namespace, objects)
        except publicurl.HostTaken as e:
            raise LauncherError(409, str(e)) from None
        if any(o["kind"] in ("Job", "CronJob") for o in objects):
            problems = pod_security_problems(
                objects, await self.kube.get("Namespace", namespace))
            if problems:
                raise LauncherError(400, "; ".join(problems) + ". Nothing was created.")
        await self._ensure_namespace(namespace, username)
        for _attempt in range(5):
            mine = (namespace, name) not in self.launching  # else another launch's name
            self.launching.add((namespace, name))
            try:
                made = await self.kube.create(record.to_secret(self.signer, resolved.secret))
                record.resource_version = made["metadata"].get("resourceVersion", "")
                break
            except BaseException as e:
                if mine:
                    self.launching.discard((namespace, name))
                if not (isinstance(e, ApiException) and auto_name and e.status == 409):
                    if not isinstance(e, ApiException):
                        raise
                    raise self._api_error(e, f"instance {name!r}") from None
                taken.add(name)  # a launch running at the same time took it: the next one
                name = self._free_name(template.default_name, taken)
                record, objects, resolved = self._plan(template, username, name, values,
                                                       ttl_seconds)
        else:
            raise LauncherError(409, "too many launches at once; try again")
        try:
            return await self._make_objects(record, objects, namespace, username, template.id)
        finally:
            self.launching.discard((namespace, name))

    async def _make_objects(self, record: InstanceRecord, objects: list[dict], namespace: str,
                            username: str, template_id: str) -> dict[str, Any]:
        """Create the objects of a launch whose record exists, then seal the record."""
        name = record.name
        created: list[dict] = []
        try:
            for obj in objects:
                made = await self.kube.create(obj)
                created.append(obj)
                record.objects[len(created) - 1]["uid"] = made["metadata"]["uid"]
            # sealed: from now on only these objects (these UIDs) are the instance's
            record.phase = READY
            await lifecycle.save_record(self.kube, record, self.signer)
        except BaseException as e:  # whatever happened (even a cancel): nothing half-made
            await self._rollback(namespace, created, name)
            if isinstance(e, ApiException) and e.status in (404, 409) \
                    and len(created) == len(objects):
                raise LauncherError(409, f"instance {name!r} was deleted (or changed) while it"
                                         " was being launched, so the launch was undone;"
                                         " launch it again if you still want it") from None
            if isinstance(e, ApiException):
                what = (f"{obj['kind']} {obj['metadata']['name']}" if len(created) < len(objects)
                        else f"instance {name!r}")
                raise self._api_error(e, what) from None
            raise
        log.info("%s launched %s (%s) in %s: %d objects", username, name, template_id,
                 namespace, len(objects))
        return self.describe(record, None)

    async def _rollback(self, namespace: str, created: list[dict], name: str) -> None:
        try:
            await lifecycle.delete_objects(
                self.kube, namespace,
                [{"kind": o["kind"], "name": o["metadata"]["name"]} for o in created])
            await self.kube.delete("Secret", record_name(name), namespace)
        except Exception as e:  # noqa: BLE001 - logged; the reconciler finishes it
            log.error("rollback of %s/%s incomplete (the reconciler finishes it): %s",
                      namespace, name, api_error_message(e) if isinstance(e, ApiException)
                      else f"{type(e).__name__}: {e}")

    async def _ensure_namespace(self, namespace: str, username: str) -> None:
        """The user's namespace with its bundle (quota, limits, network policy, accounts),
        made by the hub through the spawner's code when it is missing or was left
        unfinished; the launcher's own identity makes none."""
        existing = await self.kube.get("Namespace", namespace)
        complete = existing is not None and L.BUNDLE_HASH in (
            existing["metadata"].get("annotations") or {})
        if complete:
            return
        answer = None
        if self.hub is not None and self.hub.configured:
            try:
                answer = await self.hub.provision_namespace(username)
            except HubUnavailable:
                raise LauncherError(503, "the hub didn't answer while preparing your"
                                         f" namespace {namespace}; try again in a"
                                         " minute") from None
        if answer is not None and answer.status == 200:
            log.info("%s: namespace %s %s by the hub", username, answer.namespace or namespace,
                     answer.outcome)
            return
        if answer is not None and answer.status != 404:
            log.warning("%s: the hub refused to prepare namespace %s: %d %s", username,
                        namespace, answer.status, answer.message)
            status = answer.status if answer.status in (403, 409, 503) else 502
            raise LauncherError(status, f"your namespace {namespace} couldn't be prepared:"
                                        f" {answer.message}")
        # no hub endpoint (a hub without kdash's spawner): what is there is what there is
        if existing is not None:
            return
        if not self.settings.ensure_namespace:
            raise LauncherError(409, f"your namespace {namespace} isn't set up yet: start your"
                                     " notebook server once (hub Home page), then try again")
        try:  # only where no spawner makes namespaces (LauncherSettings.ensure_namespace)
            await self.kube.create({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "labels": L.owner_labels(username),
                             "annotations": L.owner_annotations(username)}})
        except ApiException as e:
            if e.status != 409:
                raise self._api_error(e, f"namespace {namespace}") from None

    @staticmethod
    def _api_error(e: ApiException, what: str) -> LauncherError:
        message = api_error_message(e)
        if e.status == 409:
            return LauncherError(409, f"{what} already exists; choose another name")
        if e.status == 403 and "quota" in message.lower():
            return LauncherError(403, f"not enough quota in your namespace for {what}: "
                                      f"{message}. Stop or delete another instance, or ask an"
                                      " admin for more.")
        if e.status == 422 or api_error_reason(e) == "Invalid":
            return LauncherError(400, f"{what} is invalid: {message}")
        if e.status == 403:
            return LauncherError(403, f"not allowed to create {what}: {message}")
        return LauncherError(502, f"Kubernetes failed on {what}: {message}; try again in a"
                                  " minute")

    # --- read -----------------------------------------------------------------------------
    async def _view(self, namespace: str | None, owner: str | None,
                    details: bool = False) -> ClusterView:
        """Workloads, events and pods, each in one request. A list needs only the Warning
        events, and pods only where a workload isn't ready (their states say why), so a
        list where everything runs doesn't fetch the pods at all."""
        selector = WORKLOAD_SELECTOR
        if owner is not None:
            selector = L.owner_selector(owner, "launcher")

        def pods(where: str | None) -> Any:
            return self.kube.list("Pod", where, label_selector=selector)

        deployments, statefulsets, jobs, cronjobs, events, pod_list = await asyncio.gather(
            self.kube.list("Deployment", namespace, label_selector=selector),
            self.kube.list("StatefulSet", namespace, label_selector=selector),
            self.kube.list("Job", namespace, label_selector=selector),
            self.kube.list("CronJob", namespace, label_selector=selector),
            self.kube.list("Event", namespace,
                           field_selector=None if details else "type=Warning"),
            pods(namespace) if details else asyncio.sleep(0, []),
        )
        workloads = deployments + statefulsets + jobs + cronjobs
        if not details:
            starting = {w["metadata"].get("namespace") for w in workloads if not settled(w)}
            if starting:
                pod_list = await pods(starting.pop() if len(starting) == 1 else namespace)
        return ClusterView.build(workloads, pod_list, events)

    async def list(self, actor: Actor, everyone: bool = False) -> list[dict[str, Any]]:
        """`actor`'s instances, or everyone's for an admin asking for them."""
        return (await self.list_checked(actor, everyone))[0]

    async def list_checked(self, actor: Actor, everyone: bool = False,
                           ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """The instances, and the records in the same namespaces that don't verify
        (skipped, logged; shown as "tampered")."""
        if everyone and actor.admin and self.settings.admin_access:
            (records, invalid), view = await asyncio.gather(
                lifecycle.list_records_checked(self.kube, signer=self.signer),
                self._view(None, None))
        else:
            namespace = self.settings.user_namespace(actor.name)
            (records, invalid), view = await asyncio.gather(
                lifecycle.list_records_checked(self.kube, actor.name, namespace, self.signer),
                self._view(namespace, actor.name))
        now = now_utc()
        records.sort(key=lambda r: (r.owner, r.name))
        described = []
        for rec in records:
            try:
                described.append(self.describe(rec, view, now))
            except Exception:  # noqa: BLE001 - one instance must not break everyone's list
                log.exception("instance %s/%s left out of the list", rec.namespace, rec.name)
        invalid.sort(key=lambda r: (r.namespace, r.record))
        return described, [r.as_dict() for r in invalid]

    def describe(self, rec: InstanceRecord, view: ClusterView | None,
                 now: datetime | None = None) -> dict[str, Any]:
        now = now or now_utc()
        status, reason = self._status(rec, view) if view else ("pending", "created")
        if rec.phase == CREATING:  # a launch in progress (or cut short: the reconciler's)
            status, reason = "pending", "creating"
        elif rec.phase == DELETING:  # a delete in progress (or cut short: the reconciler's)
            status, reason = "deleting", "being deleted"
        age = (now - rec.created_at).total_seconds() if rec.created_at else None
        expires = rec.expires(self.max_ttl)
        ttl_left = (expires - now).total_seconds() if expires else None
        return {
            "name": rec.name, "owner": rec.owner, "namespace": rec.namespace,
            "template": rec.template, "template_name": rec.template_name,
            "status": status, "reason": reason, "state": rec.state, "phase": rec.phase,
            "url": self.instance_url(rec.owner, rec.name)
            if rec.proxy and rec.proxy.get("http", True) else None,
            "address": address(rec),
            "public_url": publicurl.public_url(self.settings, rec),
            "created_at": iso(rec.created_at), "expires_at": iso(expires) or None,
            "age_seconds": int(age) if age is not None else None,
            "age": format_duration(age, none="-"),
            "ttl_left_seconds": max(0, int(ttl_left)) if ttl_left is not None else None,
            "ttl_left": format_duration(max(0, ttl_left)) if ttl_left is not None else "-",
            "on_expiry": rec.expiry, "values": rec.values,
            "objects": [{"kind": o["kind"], "name": o["name"]} for o in rec.objects],
            "batch": batch_summary(rec, view) if view else [],
        }

    @staticmethod
    def _status(rec: InstanceRecord, view: ClusterView) -> tuple[str, str]:
        """The workloads' status; for batch work its own (a retried pod's failure is not
        the Job's, and a finished Job is done, not pending)."""
        status, reason = instance_status(rec, view)
        batch = batch_status(rec, view) if status != "stopped" else None
        if batch is None:
            return status, reason
        if batch[0] in ("succeeded", "finished", "failed") or status != "failed" \
                or reason.startswith("pod "):
            return batch
        return status, reason

    @property
    def max_ttl(self) -> int | None:
        return parse_duration(self.settings.max_ttl)

    async def details(self, actor: Actor, owner: str, name: str) -> dict[str, Any]:
        """The instance with its events and the last lines of its containers' logs."""
        _, rec = await self.record_for(actor, owner, name)
        view = await self._view(rec.namespace, owner, details=True)
        info = self.describe(rec, view)
        info["events"] = [{
            "time": event_time(e), "type": e.get("type", ""), "reason": e.get("reason", ""),
            "object": f"{(e.get('involvedObject') or {}).get('kind', '')}/"
                      f"{(e.get('involvedObject') or {}).get('name', '')}",
            "message": e.get("message", ""),
        } for e in view.instance_events(rec)]
        info["logs"] = await self._logs(rec, log_pods(rec, view, view.instance_pods(rec)))
        return info

    async def _logs(self, rec: InstanceRecord, pods: list[dict]) -> list[dict[str, str]]:
        logs = []
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            for container in (pod.get("spec") or {}).get("containers") or []:
                logs.append({"pod": pod_name, "container": container["name"],
                             "text": await self._container_log(rec.namespace, pod_name,
                                                               container["name"])})
        return logs

    async def _container_log(self, namespace: str, pod: str, container: str) -> str:
        try:
            text = await self.kube.api_client.call_api(
                f"/api/v1/namespaces/{namespace}/pods/{pod}/log", "GET",
                query_params=[("container", container),
                              ("tailLines", str(self.settings.log_lines))],
                header_params={"Accept": "text/plain"}, response_types_map={200: "str"},
                auth_settings=["BearerToken"], _return_http_data_only=True,
            )
            return text if isinstance(text, str) else str(text)
        except ApiException as e:
            return f"(no logs: {api_error_message(e)})"

    # --- change ---------------------------------------------------------------------------
    async def live_record_for(self, actor: Actor, owner: str, name: str) -> InstanceRecord:
        """The record, for an operation on an instance that isn't being deleted (409)."""
        _, rec = await self.record_for(actor, owner, name)
        if rec.phase == DELETING:
            raise being_deleted(name)
        return rec

    async def stop(self, actor: Actor, owner: str, name: str) -> dict[str, Any]:
        rec = await self.live_record_for(actor, owner, name)
        rec = await self._change(lifecycle.stop_instance(self.kube, rec.namespace, name,
                                                         signer=self.signer), name)
        return self.describe(rec, None) | {"status": "stopped", "reason": ""}

    async def start(self, actor: Actor, owner: str, name: str) -> dict[str, Any]:
        rec = await self.live_record_for(actor, owner, name)
        rec = await self._change(lifecycle.start_instance(self.kube, rec.namespace, name,
                                                          signer=self.signer), name)
        return self.describe(rec, None)

    async def extend(self, actor: Actor, owner: str, name: str, by: Any) -> dict[str, Any]:
        rec = await self.live_record_for(actor, owner, name)
        try:
            seconds = parse_duration(by)
        except (ValueError, OverflowError) as e:
            raise LauncherError(400, f"by: {e}") from None
        if not seconds:
            raise LauncherError(400, "by: give a duration such as 2h")
        if seconds > MAX_SECONDS:
            raise LauncherError(400, "by: at most 10 years")
        if rec.expires(self.max_ttl) is None:
            raise LauncherError(400, f"instance {name!r} doesn't expire; nothing to extend")
        now, current = now_utc(), rec.expires(self.max_ttl)
        caps = [c for c in (self.max_ttl, rec.max_ttl) if c]
        cap = now + timedelta(seconds=min(caps)) if caps else None
        if cap and current and current >= cap - timedelta(seconds=AT_CAP_SECONDS):
            raise LauncherError(409, f"instance {name!r} is already at the cap: it can live"
                                     f" until {human_time(current)}, the most allowed"
                                     f" ({format_duration(min(caps))} from now)")
        wanted = max(current, now) + timedelta(seconds=seconds)
        rec = await self._change(lifecycle.extend_instance(
            self.kube, rec.namespace, name, seconds, self.max_ttl, signer=self.signer), name)
        info = self.describe(rec, None)
        expires = rec.expires(self.max_ttl)
        info["capped"] = bool(expires and expires < wanted - timedelta(seconds=5))
        info["message"] = (
            f"extended to the cap: this instance can live until {human_time(expires)},"
            " the most allowed" if info["capped"]
            else f"extended by {format_duration(seconds)}: it now lives until"
                 f" {human_time(expires)}")
        return info

    async def delete(self, actor: Actor, owner: str, name: str) -> None:
        """Every object of the instance, then its record (crash-safe: `deleting` first);
        waits for a rollforward of the reconciler under way in this process."""
        async with user_errors(f"deleting instance {name!r}"):
            _, rec = await self.record_for(actor, owner, name)
            async with self.acting_on(rec.namespace, name):
                try:
                    await lifecycle.delete_instance(self.kube, rec.namespace, name,
                                                    signer=self.signer)
                except RecordInvalid:
                    raise untrusted(name) from None
                except lifecycle.InstanceNotFound:
                    # gone while we waited for the lock: the reconciler (or a delete at
                    # the same time) finished what was asked
                    log.info("instance %s/%s was deleted meanwhile", rec.namespace, name)
                    return
                except ApiException as e:
                    if e.status == 409:
                        raise LauncherError(409, f"instance {name!r} is being changed by"
                                                 " someone else; try again") from None
                    log.error("deleting %s/%s: %s", rec.namespace, name, api_error_message(e))
                    raise await self._delete_failed(
                        rec.namespace, name, f"Kubernetes failed while deleting instance"
                                             f" {name!r} ({api_error_message(e)})") from None
        log.info("%s deleted instance %s/%s", actor.name, rec.namespace, name)
        if rec.notebook_env or rec.notebook_file:  # its details leave the notebook too
            from .notebookenv import sync_quietly  # notebookenv builds on this module

            await sync_quietly(self, owner)

    async def _delete_failed(self, namespace: str, name: str, why: str) -> LauncherError:
        """What a person needs after a delete failed half-way: whether it goes on."""
        try:
            _, rec = await lifecycle.read_record(self.kube, namespace, name, self.signer)
        except Exception:  # noqa: BLE001 - unknown: say what we know
            rec = None
        if rec is not None and rec.phase == DELETING:
            return LauncherError(502, f"{why}. The instance is marked for deletion: the"
                                      " launcher finishes the delete on its own (its next"
                                      " reconcile pass), or delete it again")
        return LauncherError(502, f"{why}. Nothing was deleted; try again in a minute")

    async def _change(self, operation: Any, name: str) -> Any:
        """Run a lifecycle operation; a record changed meanwhile is a 409, gone a 404."""
        try:
            return await operation
        except RecordInvalid:
            raise untrusted(name) from None
        except lifecycle.InstanceDeleting:
            raise being_deleted(name) from None
        except lifecycle.InstanceNotFound:
            raise LauncherError(404, f"instance {name!r} is gone") from None
        except ApiException as e:
            if e.status == 409:
                raise LauncherError(409, f"instance {name!r} is being changed by someone"
                                         " else; try again") from None
            raise self._api_error(e, f"instance {name!r}") from None

    async def upstream(self, actor: Actor, owner: str, name: str) -> tuple[str, bool]:
        """The base URL the proxy forwards to (a ready pod of the instance's own workload)
        and whether to strip the proxy prefix (404 unless `actor` may use it)."""
        if not self.can_proxy(actor, owner):
            raise not_found(owner, name)
        rec = await self.live_record_for(Actor(owner), owner, name)
        if not rec.proxy:
            raise LauncherError(404, f"instance {name!r} has no service to proxy to")
        if not rec.proxy.get("http", True):
            raise LauncherError(404, f"instance {name!r} is not a web service; connect to"
                                     f" {address(rec)} from your notebook")
        if rec.state != "running":
            raise LauncherError(503, f"instance {name!r} is stopped; start it first")
        target = await self.target(rec)
        return target.base_url, bool(rec.proxy.get("strip_prefix", True))

    async def target(self, rec: InstanceRecord) -> Target:
        try:
            return await find_target(self.kube, rec, self.pod_networks)
        except TargetError as e:
            if e.status == 409:
                log.warning("proxy to %s/%s refused: %s", rec.namespace, rec.name, e.message)
            raise LauncherError(e.status, e.message) from None
        except ApiException as e:
            raise self._api_error(e, f"the pods of instance {rec.name!r}") from None


def human_time(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else "-"


def settled(workload: dict) -> bool:
    """A workload whose pods need no look: all ready, scaled to zero, or a finished Job."""
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    if workload.get("kind") == "Job":
        return bool(status.get("succeeded") or status.get("failed") or spec.get("suspend"))
    if workload.get("kind") == "CronJob":
        return not status.get("active")
    want = spec.get("replicas", 1)
    return want == 0 or (status.get("readyReplicas") or 0) >= want


def address(rec: InstanceRecord) -> str | None:
    """host:port of the instance's Service inside the cluster (from the user's notebook)."""
    proxy = rec.proxy or {}
    if not proxy.get("service"):
        return None
    port = proxy.get("address_port") or proxy.get("service_port")
    return f"{proxy['service']}.{rec.namespace}.svc:{port}"


def _labels_match(selector: dict, labels: Any) -> bool:
    return isinstance(labels, dict) and all(labels.get(k) == v for k, v in selector.items())


def _container_port(workload: dict, target: Any) -> int | None:
    """The container port a Service's targetPort means in `workload`'s pods."""
    if isinstance(target, int) and not isinstance(target, bool):
        return target if 0 < target < 65536 else None
    pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and isinstance(port.get("containerPort"), int):
                return port["containerPort"]
    return None


def proxy_target(template: Template, objects: list[dict]) -> dict[str, Any] | None:
    """What the proxy reaches: the first Service of the template (its address for
    notebooks), the workload it selects and the container port behind its port. Decided
    here, from the rendered objects, and signed with the record."""
    for obj in objects:
        if obj["kind"] != "Service":
            continue
        spec = obj.get("spec") or {}
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
        if not ports:
            return None
        chosen = ports[0]
        if template.service_port is not None:
            wanted = str(template.service_port)
            for p in ports:
                if str(p.get("name")) == wanted or str(p.get("port")) == wanted:
                    chosen = p
        service_port = chosen.get("port")
        # where notebooks connect (the template's connection port, e.g. MinIO's S3 API)
        address_port = service_port
        wanted_address = template.connection.port if template.connection else None
        for p in ports if wanted_address is not None else []:
            if str(p.get("name")) == str(wanted_address) or str(p.get("port")) == str(
                    wanted_address):
                address_port = p.get("port")
        if not isinstance(service_port, int) or not 0 < service_port < 65536:
            return None
        selector = spec.get("selector")
        workload, port = None, None
        for candidate in objects:
            if candidate["kind"] not in lifecycle.SCALABLE or not isinstance(selector, dict) \
                    or not selector:
                continue
            pod_meta = (((candidate.get("spec") or {}).get("template") or {})
                        .get("metadata") or {})
            if _labels_match(selector, pod_meta.get("labels")):
                workload = {"kind": candidate["kind"], "name": candidate["metadata"]["name"]}
                port = _container_port(candidate, chosen.get("targetPort", service_port))
                break
        if port is None:
            workload = None
        return {"service": obj["metadata"]["name"], "service_port": service_port,
                "workload": workload, "port": port,
                "strip_prefix": bool(template.proxy_strip_prefix), "http": bool(template.http),
                **({"address_port": address_port} if address_port != service_port
                   and isinstance(address_port, int) and 0 < address_port < 65536 else {})}
    return None
