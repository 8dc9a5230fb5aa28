"""Finalizers, ownerReference garbage collection and namespace deletion.

Like the real garbage collector, dependents are found by owner uid: with Background
propagation they are deleted once their owners are gone; with Foreground the owner keeps a
`foregroundDeletion` finalizer until its dependents are gone; Orphan strips the owner
references. Deleting a namespace marks it Terminating (new content is then refused), deletes
everything in it shortly after, and removes it once it is empty and has no finalizers left.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import resources
from .copying import deep_copy
from .resources import ResourceType
from .status import APIError
from .store import Event

if TYPE_CHECKING:
    from .operations import Operations


class GarbageCollector:
    def __init__(self, ops: Operations, namespace_delay: float = 0.05):
        self.ops = ops
        self.namespace_delay = namespace_delay
        # uid -> (type, namespace, name); owner uid -> dependent uids
        self.by_uid: dict[str, tuple[ResourceType, str, str]] = {}
        self.dependents_of: dict[str, set[str]] = {}
        self.tasks: set[asyncio.Handle] = set()
        ops.store.listeners.append(self._index)

    # ---------------------------------------------------------------- index

    def _index(self, ev: Event) -> None:
        meta = ev.obj["metadata"]
        uid = meta.get("uid")
        if not uid:
            return
        old_owners = {r.get("uid") for r in ((ev.old or {}).get("metadata") or {}).get(
            "ownerReferences") or []}
        new_owners = set() if ev.type == "DELETED" else {
            r.get("uid") for r in meta.get("ownerReferences") or []}
        for o in old_owners - new_owners:
            self.dependents_of.get(o, set()).discard(uid)
        for o in new_owners - old_owners:
            self.dependents_of.setdefault(o, set()).add(uid)
        if ev.type == "DELETED":
            self.by_uid.pop(uid, None)
        else:
            self.by_uid[uid] = (ev.rtype, meta.get("namespace", ""), meta["name"])

    def lookup(self, uid: str) -> tuple[ResourceType, dict] | None:
        where = self.by_uid.get(uid)
        if where is None:
            return None
        rtype, ns, name = where
        obj = self.ops.store.raw(rtype, ns, name)
        return (rtype, obj) if obj is not None else None

    def dependents(self, owner: dict) -> list[tuple[ResourceType, dict]]:
        out = []
        for uid in sorted(self.dependents_of.get(owner["metadata"]["uid"], ())):
            found = self.lookup(uid)
            if found:
                out.append(found)
        return out

    def has_dependents(self, owner: dict) -> bool:
        return bool(self.dependents(owner))

    # ---------------------------------------------------------------- propagation

    def orphan_dependents(self, owner: dict) -> None:
        uid = owner["metadata"]["uid"]
        for rtype, dep in self.dependents(owner):
            new = deep_copy(dep)
            refs = [r for r in new["metadata"].get("ownerReferences") or []
                    if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self.ops.store.put(rtype, new, "MODIFIED", dep)

    def delete_dependents(self, owner: dict, policy: str) -> None:
        for rtype, dep in self.dependents(owner):
            if dep["metadata"].get("deletionTimestamp"):
                continue
            self._delete(rtype, dep, policy)

    def _delete(self, rtype: ResourceType, obj: dict, policy: str = "Background") -> None:
        m = obj["metadata"]
        try:
            self.ops.delete(rtype, m.get("namespace"), m["name"],
                            {"propagationPolicy": policy})
        except APIError as e:
            if e.code != 404:
                raise

    def after_create(self, rtype: ResourceType, obj: dict) -> None:
        """Nothing yet: owner references to missing owners are left alone."""

    def after_remove(self, rtype: ResourceType, gone: dict) -> None:
        meta = gone["metadata"]
        uid = meta["uid"]
        # background collection of dependents whose owners are all gone
        for dep_uid in sorted(self.dependents_of.pop(uid, set())):
            found = self.lookup(dep_uid)
            if not found:
                continue
            dtype, dep = found
            refs = dep["metadata"].get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") != uid and self.lookup(r.get("uid", ""))]
            if alive:
                new = deep_copy(dep)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self.ops.store.put(dtype, new, "MODIFIED", dep)
            elif not dep["metadata"].get("deletionTimestamp"):
                self._delete(dtype, dep)
        # owners waiting in foreground deletion for this dependent
        for ref in meta.get("ownerReferences") or []:
            found = self.lookup(ref.get("uid", ""))
            if not found:
                continue
            otype, owner = found
            if ("foregroundDeletion" in (owner["metadata"].get("finalizers") or [])
                    and not self.has_dependents(owner)):
                self.ops.remove_finalizer(otype, owner, "foregroundDeletion")
        ns = meta.get("namespace")
        if ns and rtype.namespaced:
            self._maybe_finish_namespace(ns)

    # ---------------------------------------------------------------- namespaces

    def delete_namespace(self, ns: dict) -> dict:
        ns_type = resources.by_kind("Namespace")
        if ns["metadata"].get("deletionTimestamp"):
            return ns
        new = deep_copy(ns)
        new["metadata"]["deletionTimestamp"] = _now()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["status"] = {"phase": "Terminating"}
        stored = self.ops.store.put(ns_type, new, "MODIFIED", ns)
        name = new["metadata"]["name"]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._cascade(name)
        else:
            handle = loop.call_later(self.namespace_delay, self._cascade, name)
            self.tasks.add(handle)
        return stored

    def _cascade(self, namespace: str) -> None:
        for rtype in resources.STORED_TYPES:
            if not rtype.namespaced:
                continue
            for obj in list(self.ops.store.raw_items(rtype, namespace)):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(rtype, obj)
        self._maybe_finish_namespace(namespace, force_check=True)

    def _maybe_finish_namespace(self, namespace: str, force_check: bool = False) -> None:
        ns_type = resources.by_kind("Namespace")
        ns = self.ops.store.raw(ns_type, None, namespace)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for rtype in resources.STORED_TYPES:
            if rtype.namespaced and self.ops.store.raw_items(rtype, namespace):
                return
        if ns["metadata"].get("finalizers"):
            # the namespace controller is done; user finalizers keep it
            if (ns.get("spec") or {}).get("finalizers"):
                new = deep_copy(ns)
                new["spec"]["finalizers"] = []
                self.ops.store.put(ns_type, new, "MODIFIED", ns)
            return
        self.ops._remove(ns_type, ns)

    def cancel(self) -> None:
        for h in self.tasks:
            h.cancel()
        self.tasks.clear()


def _now() -> str:
    from .operations import now

    return now()
