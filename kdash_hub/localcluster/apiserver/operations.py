"""The API verbs with their semantics: create, get, list, update, patch, delete, bind, scale.

Both the HTTP layer and in-process callers (the kubelet, tests) go through these methods,
so admission (namespace lifecycle, LimitRange defaults, ResourceQuota), validation,
resourceVersion preconditions, finalizers and garbage collection apply to every write.
Every method raises `APIError` on failure.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from . import defaults, podsecurity, resources
from .copying import deep_copy
from .gc import GarbageCollector
from .patch import json_patch, merge_patch, strategic_merge_patch
from .quota import Admission
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .status import (
    APIError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
    unsupported_media_type,
)
from .store import Store
from .validation import UNKNOWN_FIELD, Validator, request_duplicates, warn

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"


JOB_DELETE_WARNING = (
    "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background"
    " to remove them or set propagationPolicy=Orphan to suppress this warning")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Operations:
    """Kubernetes API semantics over a `Store`."""

    def __init__(self, store: Store, validator: Validator, *,
                 graceful_pod_deletion: bool = False):
        self.store = store
        self.validator = validator
        self.alloc = defaults.Allocator()
        self.admission = Admission(self)
        self.gc = GarbageCollector(self)
        self.graceful_pod_deletion = graceful_pod_deletion
        # called after each successful write: (verb, rtype, object)
        self.after_write: list[Callable[[str, ResourceType, dict], None]] = []

    # ---------------------------------------------------------------- helpers

    def _check_body(self, rtype: ResourceType, body: Any, expected_kind: str | None = None
                    ) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        _prune_nulls(body)
        kind = expected_kind or rtype.kind
        api_version = "autoscaling/v1" if kind == "Scale" else rtype.api_version
        body.setdefault("kind", kind)
        body.setdefault("apiVersion", api_version)
        if body["kind"] != kind or body["apiVersion"] != api_version:
            raise bad_request(
                f"the object provided is unrecognized (must be of type {kind} in "
                f"{api_version}): got kind {body.get('kind')!r} apiVersion "
                f"{body.get('apiVersion')!r}")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _undecodable(kind, api_version, "metadata: must be an object")
        for k in ("name", "generateName", "namespace", "resourceVersion", "uid"):
            if k in meta and not isinstance(meta[k], str):
                raise _undecodable(kind, api_version, f"metadata.{k}: must be a string")
        for k in ("labels", "annotations"):
            if k in meta and not (isinstance(meta[k], dict) and all(
                    isinstance(v, str) for v in meta[k].values())):
                raise _undecodable(kind, api_version, f"metadata.{k}: must be a map of strings")
        if "finalizers" in meta and not (isinstance(meta["finalizers"], list) and all(
                isinstance(v, str) for v in meta["finalizers"])):
            raise _undecodable(kind, api_version, "metadata.finalizers: must be a list of strings")
        if "ownerReferences" in meta and not (isinstance(meta["ownerReferences"], list) and all(
                isinstance(r, dict) and isinstance(r.get("uid", ""), str)
                for r in meta["ownerReferences"])):
            raise _undecodable(kind, api_version,
                               "metadata.ownerReferences: must be a list of owner references")
        return body

    def _schema(self, rtype: ResourceType, obj: dict, field_validation: str,
                previous: dict | None = None, patch: Callable[[], str] | None = None
                ) -> list[dict]:
        """Schema causes; a wrongly typed field is a decode error (400), as on a real server.

        Unknown and duplicate fields under fieldValidation=Strict fail as a real server's
        strict decoding does: 400 BadRequest for a create or update, and for a patch (`patch()`
        gives its text) 422 Invalid on the field `patch`. Under Warn each is a warning."""
        causes = self.validator.validate(rtype, obj, field_validation, previous)
        strict = [c["message"] for c in causes if c["reason"] == UNKNOWN_FIELD]
        causes = [c for c in causes if c["reason"] != UNKNOWN_FIELD]
        duplicates = [f'duplicate field "{p}"' for p in request_duplicates.get() or ()]
        if field_validation == "Warn":
            for message in duplicates:
                warn(message)
        elif field_validation == "Strict":
            strict = duplicates + strict
        if strict:
            text = "strict decoding error: " + ", ".join(strict)
            if patch is None:
                raise _undecodable(rtype.kind, rtype.api_version, text)
            raise invalid("", "", "", [{"reason": "FieldValueInvalid", "field": "patch",
                                        "message": f"Invalid value: {json.dumps(patch())}: "
                                                   f"{text}"}])
        typed = [c for c in causes if c["reason"] == "FieldValueTypeInvalid"]
        if typed:
            raise _undecodable(rtype.kind, rtype.api_version,
                               f'{typed[0]["field"]}: {typed[0]["message"]}')
        return causes

    def _namespace_for_write(self, rtype: ResourceType, namespace: str | None,
                             meta: dict, name: str, creating: bool) -> None:
        if not rtype.namespaced:
            meta.pop("namespace", None)
            return
        if not namespace:
            raise bad_request("the namespace of the object must be set")
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request")
        meta["namespace"] = namespace
        if creating:
            ns = self.store.raw(resources.by_kind("Namespace"), None, namespace)
            if ns is None:
                raise not_found("namespaces", "", namespace)
            if (ns.get("metadata") or {}).get("deletionTimestamp"):
                raise forbidden(
                    rtype.plural, rtype.group, name,
                    f"unable to create new content in namespace {namespace} because it is "
                    f"being terminated")

    def _check_pod_security(self, rtype: ResourceType, obj: dict, name: str) -> None:
        """PodSecurity admission: a Pod must meet its namespace's enforce level (403)."""
        if rtype.kind != "Pod":
            return
        ns = self.store.raw(resources.by_kind("Namespace"), None, obj["metadata"]["namespace"])
        why = podsecurity.forbidden_reason(obj, ns)
        if why:
            raise forbidden(rtype.plural, rtype.group, name, why)

    def _raise_invalid(self, rtype: ResourceType, name: str, causes: list[dict]) -> None:
        if causes:
            raise invalid(rtype.kind, rtype.group, name, causes)

    def _existing(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        obj = self.store.raw(rtype, namespace, name)
        if obj is None:
            raise not_found(rtype.plural, rtype.group, name)
        return obj

    def _notify(self, verb: str, rtype: ResourceType, obj: dict) -> None:
        for hook in list(self.after_write):
            hook(verb, rtype, obj)

    # ---------------------------------------------------------------- create

    def create(self, rtype: ResourceType, namespace: str | None, body: Any, *,
               field_validation: str = "Strict", dry_run: bool = False) -> dict:
        if rtype.kind == "Binding":
            return self.bind(namespace, body)
        if rtype.kind in resources.VIRTUAL_KINDS:
            review = self._check_body(rtype, deep_copy(body))
            review["status"] = {"allowed": True, "reason": "the kdash emulator authorizes all"}
            return review
        if "create" not in rtype.verbs:
            raise APIError(405, "MethodNotAllowed", "create is not supported")
        obj = self._check_body(rtype, deep_copy(body))
        meta = obj["metadata"]
        if not meta.get("name"):
            if meta.get("generateName"):
                suffix = "".join(random.choice(_GENERATE_CHARS) for _ in range(5))
                meta["name"] = str(meta["generateName"]) + suffix
            else:
                self._raise_invalid(rtype, "", [{
                    "reason": "FieldValueRequired",
                    "message": "Required value: name or generateName is required",
                    "field": "metadata.name"}])
        name = meta["name"]
        # decoding (400), namespace lifecycle (404/403), defaults and mutating admission
        # (LimitRanger), validation (422), validating admission (quota 403), storage (409)
        causes = self._schema(rtype, obj, field_validation)
        self._namespace_for_write(rtype, namespace, meta, name, creating=True)
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "selfLink"):
            meta.pop(k, None)
        meta["uid"] = defaults.new_uid()
        meta["creationTimestamp"] = now()
        if rtype.kind != "Event":
            meta["generation"] = 1
        with _malformed(rtype):
            defaults.normalize(rtype, obj)
            defaults.on_create(rtype, obj, self.alloc)
            self.admission.mutate(rtype, obj)
            causes += self.validator.check_object(rtype, obj)
        self._raise_invalid(rtype, name, causes)
        with _malformed(rtype):
            self._check_pod_security(rtype, obj, name)
            self.admission.validate_create(rtype, obj)
        if self.store.raw(rtype, namespace, name) is not None:
            raise already_exists(rtype.plural, rtype.group, name)
        if dry_run:
            return obj
        stored = self.store.put(rtype, obj, "ADDED")
        self.admission.after_change(rtype, stored)
        self.gc.after_create(rtype, stored)
        self._notify("create", rtype, stored)
        return stored

    # ---------------------------------------------------------------- read

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        return self._existing(rtype, namespace, name)

    def list(self, rtype: ResourceType, namespace: str | None, *,
             label_selector: str | None = None, field_selector: str | None = None,
             limit: int | None = None, continue_token: str | None = None) -> dict:
        lm = parse_label_selector(label_selector)
        fm = parse_field_selector(field_selector, rtype.kind)
        items = [o for o in self.store.raw_items(rtype, namespace) if lm(o) and fm(o)]
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if continue_token:
            try:
                start = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                after = (start["ns"], start["name"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid") from None
            items = [o for o in items if _key(o) > after]
        if limit and limit > 0 and len(items) > limit:
            remaining = len(items) - limit
            last = items[limit - 1]
            items = items[:limit]
            ns, nm = _key(last)
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"ns": ns, "name": nm}).encode()).decode()
            meta["remainingItemCount"] = remaining
        return {"kind": rtype.kind + "List", "apiVersion": rtype.api_version,
                "metadata": meta, "items": items}

    # ---------------------------------------------------------------- update

    def update(self, rtype: ResourceType, namespace: str | None, name: str, body: Any, *,
               subresource: str | None = None, field_validation: str = "Strict",
               dry_run: bool = False) -> dict:
        existing = self._existing(rtype, namespace, name)
        obj = self._check_body(rtype, deep_copy(body))
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the "
                f"URL ({name})")
        meta["name"] = name
        self._namespace_for_write(rtype, namespace, meta, name, creating=False)
        return self._write(rtype, existing, obj, subresource, field_validation, dry_run)

    def _write(self, rtype: ResourceType, existing: dict, obj: dict,
               subresource: str | None, field_validation: str, dry_run: bool,
               patch: Callable[[], str] | None = None) -> dict:
        """The common end of update and patch: preconditions, merge rules, validation.
        `patch`: the patch's text as a real server quotes it in a strict decoding error."""
        meta = obj["metadata"]
        old_meta = existing["metadata"]
        name = old_meta["name"]
        rv = meta.get("resourceVersion")
        if rv and str(rv) != old_meta["resourceVersion"]:
            raise conflict(rtype.plural, rtype.group, name)
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise conflict(rtype.plural, rtype.group, name,
                           f"Precondition failed: UID in precondition: {meta['uid']}, "
                           f"UID in object meta: {old_meta['uid']}")
        if subresource == "status":
            new = deep_copy(existing)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            new["metadata"] = _status_update_metadata(rtype, old_meta, meta)
        else:
            new = obj
            if rtype.has_status:
                if "status" in existing:
                    new["status"] = deep_copy(existing["status"])
                else:
                    new.pop("status", None)
            for k in ("uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation", "namespace"):
                if k in old_meta:
                    meta[k] = old_meta[k]
                else:
                    meta.pop(k, None)
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if rtype.kind == "Namespace":
            new.setdefault("metadata", {}).setdefault("labels", {})[
                "kubernetes.io/metadata.name"] = name
        if subresource != "status":
            with _malformed(rtype):
                defaults.normalize(rtype, new)
            self.admission.mutate_update(rtype, existing, new)
        causes = self._schema(rtype, new, field_validation, previous=existing, patch=patch)
        if new == existing:
            return existing  # a no-op write doesn't change resourceVersion
        with _malformed(rtype):
            causes += self.validator.check_object(rtype, new)
            causes += self.validator.check_update(rtype, existing, new, subresource)
        self._raise_invalid(rtype, name, causes)
        if defaults.spec_of(new) != defaults.spec_of(existing) and "generation" in old_meta:
            new["metadata"]["generation"] = old_meta["generation"] + 1
        if dry_run:
            return new
        if self._finished(rtype, old_meta, new):
            stored = self.store.put(rtype, new, "MODIFIED", existing)
            return self._remove(rtype, stored)
        stored = self.store.put(rtype, new, "MODIFIED", existing)
        self.admission.after_change(rtype, stored, old=existing)
        self._notify("update", rtype, stored)
        return stored

    @staticmethod
    def _finished(rtype: ResourceType, old_meta: dict, new: dict) -> bool:
        """Being deleted, no finalizer left and no grace period running (a pod waiting for
        its kubelet stays), and for a namespace no namespace-controller finalizer."""
        meta = new["metadata"]
        if not old_meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        if meta.get("deletionGracePeriodSeconds"):
            return False
        return not (rtype.kind == "Namespace" and (new.get("spec") or {}).get("finalizers"))

    # ---------------------------------------------------------------- patch

    def patch(self, rtype: ResourceType, namespace: str | None, name: str, body: Any,
              content_type: str, *, subresource: str | None = None,
              field_validation: str = "Strict", dry_run: bool = False) -> dict:
        content_type = (content_type or "").split(";")[0].strip()
        existing = self.store.raw(rtype, namespace, name)
        if existing is None:
            if content_type == APPLY_PATCH and subresource is None:
                return self.create(rtype, namespace, body, field_validation=field_validation,
                                   dry_run=dry_run)
            raise not_found(rtype.plural, rtype.group, name)
        # a private copy: merge patch shares unchanged subtrees with the stored object,
        # which must never change in place (watch history and readers hold it)
        patched = deep_copy(self.apply_patch(existing, body, content_type,
                                                 self.validator.patch_schema(rtype)))
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        obj = self._check_body(rtype, patched)
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise bad_request("metadata.name can't be changed by a patch")
        self._namespace_for_write(rtype, namespace, meta, name, creating=False)
        if subresource != "status" and rtype.has_status:
            # a patch of the main resource can't change status
            if "status" in existing:
                obj["status"] = deep_copy(existing["status"])
            else:
                obj.pop("status", None)
        def text() -> str:  # only needed for an error
            if content_type == STRATEGIC_PATCH:
                return go_map_text(body)
            return json.dumps(patched, separators=(",", ":"))

        return self._write(rtype, existing, obj, subresource, field_validation, dry_run,
                           patch=None if content_type == APPLY_PATCH else text)

    @staticmethod
    def apply_patch(existing: dict, body: Any, content_type: str, schema: Any = None) -> Any:
        if content_type == MERGE_PATCH:
            if not isinstance(body, dict):
                raise bad_request("merge patch must be a JSON object")
            return merge_patch(existing, body)
        if content_type == JSON_PATCH:
            return json_patch(existing, body)
        if content_type in (STRATEGIC_PATCH, APPLY_PATCH):
            return strategic_merge_patch(existing, body, schema)
        raise unsupported_media_type(content_type)

    # ---------------------------------------------------------------- delete

    def delete(self, rtype: ResourceType, namespace: str | None, name: str,
               options: dict | None = None, *, dry_run: bool = False) -> dict:
        options = options or {}
        existing = self._existing(rtype, namespace, name)
        meta = existing["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(rtype.plural, rtype.group, name,
                           f"Precondition failed: UID in precondition: {pre['uid']}, "
                           f"UID in object meta: {meta['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rtype.plural, rtype.group, name,
                           f"Precondition failed: ResourceVersion in precondition: "
                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                           f"{meta['resourceVersion']}")
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None and rtype.kind == "Job" and rtype.group == "batch":
            # batch/v1 keeps a Job's pods unless told otherwise (backwards compatibility),
            # and says so, as the real Job storage does
            warn(JOB_DELETE_WARNING)
            policy = "Orphan"
        policy = policy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise invalid("DeleteOptions", "", "", [{
                "reason": "FieldValueNotSupported", "field": "propagationPolicy",
                "message": f'Unsupported value: "{policy}": supported values: '
                           f'"Foreground", "Background", "Orphan"'}])
        if dry_run:
            return existing
        if rtype.kind == "Namespace":
            return self.gc.delete_namespace(existing)
        if policy == "Orphan":
            self.gc.orphan_dependents(existing)
        grace = options.get("gracePeriodSeconds")
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds"):
            # a pod already terminating: only a shorter grace period changes anything
            current = meta["deletionGracePeriodSeconds"]
            if grace is None or grace >= current:
                return existing
            if grace == 0 and not finalizers:
                return self._remove(rtype, existing)
            new = deep_copy(existing)
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            return self.store.put(rtype, new, "MODIFIED", existing)
        if policy == "Foreground" and self.gc.has_dependents(existing):
            if "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
        graceful = (rtype.kind == "Pod" and self.graceful_pod_deletion
                    and (existing.get("spec") or {}).get("nodeName") and grace != 0
                    and not meta.get("deletionTimestamp"))
        if finalizers or graceful:
            return self._mark_deleting(rtype, existing, finalizers, policy, grace)
        return self._remove(rtype, existing)

    def _mark_deleting(self, rtype: ResourceType, existing: dict, finalizers: list[str],
                       policy: str, grace: int | None) -> dict:
        new = deep_copy(existing)
        meta = new["metadata"]
        if finalizers:
            meta["finalizers"] = finalizers
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now()
            if rtype.kind == "Pod" and grace is None:
                grace = (new.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            meta["deletionGracePeriodSeconds"] = grace or 0
        if new == existing:
            return existing  # deleted again while finalizers are pending: nothing changes
        stored = self.store.put(rtype, new, "MODIFIED", existing)
        if policy == "Foreground":
            self.gc.delete_dependents(stored, "Foreground")
        self._notify("update", rtype, stored)
        return stored

    def _remove(self, rtype: ResourceType, existing: dict) -> dict:
        gone = self.store.remove(rtype, existing)
        self.admission.after_change(rtype, gone, deleted=True)
        self.gc.after_remove(rtype, gone)
        self._notify("delete", rtype, gone)
        return gone

    def remove_finalizer(self, rtype: ResourceType, obj: dict, finalizer: str) -> None:
        """Drop one finalizer (the GC's own); removes the object when none are left."""
        current = self.store.raw(rtype, obj["metadata"].get("namespace"),
                                 obj["metadata"]["name"])
        if current is None or current["metadata"]["uid"] != obj["metadata"]["uid"]:
            return
        new = deep_copy(current)
        new["metadata"]["finalizers"] = [
            f for f in new["metadata"].get("finalizers") or [] if f != finalizer]
        if not new["metadata"]["finalizers"]:
            new["metadata"].pop("finalizers")
        self._write(rtype, current, new, None, "Ignore", False)

    def delete_collection(self, rtype: ResourceType, namespace: str | None, *,
                          label_selector: str | None = None,
                          field_selector: str | None = None,
                          options: dict | None = None) -> dict:
        listed = self.list(rtype, namespace, label_selector=label_selector,
                           field_selector=field_selector)
        out = []
        for obj in listed["items"]:
            m = obj["metadata"]
            try:
                out.append(self.delete(rtype, m.get("namespace"), m["name"], options))
            except APIError as e:
                if e.code != 404:
                    raise
        listed["items"] = out
        return listed

    # ---------------------------------------------------------------- subresources

    def bind(self, namespace: str | None, body: Any, pod_name: str | None = None) -> dict:
        """POST a Binding: the scheduler's way of setting a pod's spec.nodeName."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        name = pod_name or (body.get("metadata") or {}).get("name")
        target = body.get("target") or {}
        if not name or not target.get("name"):
            raise invalid("Binding", "", name or "", [{
                "reason": "FieldValueRequired", "field": "target.name",
                "message": "Required value"}])
        pods = resources.by_kind("Pod")
        pod = self._existing(pods, namespace, name)
        if (pod.get("spec") or {}).get("nodeName"):
            raise conflict("pods", "", name,
                           f'pod {name} is already assigned to node '
                           f'"{pod["spec"]["nodeName"]}"')
        new = deep_copy(pod)
        new["spec"]["nodeName"] = target["name"]
        conds = new.setdefault("status", {}).setdefault("conditions", [])
        conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": now()})
        stored = self.store.put(pods, new, "MODIFIED", pod)
        self._notify("update", pods, stored)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "code": 201}

    def token_request(self, namespace: str | None, name: str, body: Any) -> dict:
        """POST serviceaccounts/NAME/token: a TokenRequest answered with a JWT-shaped token
        bound to the account's uid (unsigned: the emulator authenticates nobody)."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        account = self._existing(resources.by_kind("ServiceAccount"), namespace, name)
        spec = dict(body.get("spec") or {})
        seconds = spec.get("expirationSeconds", 3600)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 600:
            raise invalid("TokenRequest", "authentication.k8s.io", name, [{
                "reason": "FieldValueInvalid", "field": "spec.expirationSeconds",
                "message": "Invalid value: may not specify a duration less than 10 minutes"}])
        issued = int(datetime.now(UTC).timestamp())
        uid = account["metadata"]["uid"]
        claims = {"aud": spec.get("audiences") or ["https://kubernetes.default.svc"],
                  "iat": issued, "nbf": issued, "exp": issued + seconds,
                  "iss": "https://kubernetes.default.svc",
                  "sub": f"system:serviceaccount:{namespace}:{name}",
                  "jti": f"{random.getrandbits(128):032x}",
                  "kubernetes.io": {"namespace": namespace, "serviceaccount": {
                      "name": name, "uid": uid}}}

        def part(value: dict) -> str:
            raw = json.dumps(value, separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        token = f"{part({'alg': 'none', 'kid': 'kdash-emulator'})}.{part(claims)}.emulator"
        expires = datetime.fromtimestamp(issued + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace,
                             "creationTimestamp": None},
                "spec": {"audiences": claims["aud"], "expirationSeconds": seconds,
                         "boundObjectRef": spec.get("boundObjectRef")},
                "status": {"token": token, "expirationTimestamp": expires}}

    def get_scale(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        obj = self._existing(rtype, namespace, name)
        return _scale_of(obj)

    def update_scale(self, rtype: ResourceType, namespace: str | None, name: str,
                     body: Any, content_type: str | None = None) -> dict:
        obj = self._existing(rtype, namespace, name)
        scale = _scale_of(obj)
        if content_type:
            body = self.apply_patch(scale, body, content_type.split(";")[0].strip())
        body = self._check_body(rtype, deep_copy(body), expected_kind="Scale")
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != obj["metadata"]["resourceVersion"]:
            raise conflict(rtype.plural, rtype.group, name)
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", "autoscaling", name, [{
                "reason": "FieldValueInvalid", "field": "spec.replicas",
                "message": f"Invalid value: {replicas!r}: must be greater than or equal to 0"}])
        new = deep_copy(obj)
        new.setdefault("spec", {})["replicas"] = replicas
        stored = self._write(rtype, obj, new, None, "Ignore", False)
        return _scale_of(stored)


_SYSTEM_META = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                "deletionGracePeriodSeconds", "generation", "resourceVersion", "selfLink")


def _status_update_metadata(rtype: ResourceType, old: dict, new: dict) -> dict:
    """A write to `/status` changes the status and, as on a real server, the object's
    metadata too (labels, annotations, finalizers), except what the kind's status strategy
    keeps: a Pod's ownerReferences, a Deployment's labels."""
    meta = {k: deep_copy(v) for k, v in new.items() if k not in _SYSTEM_META}
    meta |= {k: deep_copy(v) for k, v in old.items() if k in _SYSTEM_META}
    kept = {"Pod": ("ownerReferences",), "Deployment": ("labels",)}.get(rtype.kind, ())
    for key in kept:
        if key in old:
            meta[key] = deep_copy(old[key])
        else:
            meta.pop(key, None)
    return meta


def _undecodable(kind: str, api_version: str, why: str) -> APIError:
    """A body that can't be decoded into the kind: 400, in a real server's words."""
    version = api_version.rpartition("/")[2]
    return bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: {why}')


@contextlib.contextmanager
def _malformed(rtype: ResourceType) -> Iterator[None]:
    """Semantic code meeting a wrongly shaped object (schema validation off): 400, not 500."""
    try:
        yield
    except (TypeError, AttributeError, KeyError, ValueError) as e:
        raise _undecodable(rtype.kind, rtype.api_version,
                           f"object: malformed: {type(e).__name__}: {e}") from None


def go_map_text(value: Any) -> str:
    """A decoded JSON value as Go's `%+v` prints it (`map[spec:map[replicas:2]]`): how a
    real server quotes a strategic merge patch in its errors."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_map_text(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_map_text(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e21 else repr(number)
    return str(value)


def _prune_nulls(value: Any) -> None:
    """Drop null fields in place: a real server decodes them as absent (Go zero values)."""
    if isinstance(value, dict):
        for k in [k for k, v in value.items() if v is None]:
            del value[k]
        for v in value.values():
            _prune_nulls(v)
    elif isinstance(value, list):
        for v in value:
            _prune_nulls(v)


def _key(obj: dict) -> tuple[str, str]:
    m = obj["metadata"]
    return (m.get("namespace", ""), m["name"])


def _selector_string(selector: dict | None) -> str:
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        op = e.get("operator")
        if op in ("In", "NotIn"):
            parts.append(f"{e['key']} {op.lower()} ({','.join(e.get('values') or [])})")
        elif op == "Exists":
            parts.append(e["key"])
        elif op == "DoesNotExist":
            parts.append(f"!{e['key']}")
    return ",".join(parts)


def _scale_of(obj: dict) -> dict:
    m = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector")
    if obj.get("kind") == "ReplicationController":  # a plain map of labels
        selector = {"matchLabels": selector or {}}
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                       "creationTimestamp") if k in m},
        # ScaleSpec.replicas is omitempty: 0 isn't written; the status's selector too
        "spec": {k: v for k, v in {"replicas": (obj.get("spec") or {}).get(
            "replicas", 0)}.items() if v},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   **({"selector": _selector_string(selector)}
                      if _selector_string(selector) else {})},
    }
