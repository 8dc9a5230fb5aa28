"""In-memory object storage with one global resourceVersion, an event log and watch fan-out.

Stored objects are never mutated in place: every write stores a new dict, so readers (lists,
watch streams) may hold references without copying. The event log is a bounded window, like
the API server's watch cache; a watch from a resourceVersion older than the window gets 410.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import resources
from .copying import deep_copy
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .status import gone, not_found

Key = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    obj: dict
    old: dict | None = None


@dataclass(eq=False)
class Watcher:
    """One watch stream's subscription: filters the store's events into its queue."""

    rtype: ResourceType
    namespace: str | None
    match: Callable[[dict], bool]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    dropped: bool = False

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        if self.namespace and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        return self.match(obj)

    def offer(self, event: Event) -> None:
        """Queue the event as this watcher sees it (selector changes become ADDED/DELETED)."""
        if event.rtype is not self.rtype:
            return
        now, before = self.matches(event.obj), self.matches(event.old)
        if event.type == "MODIFIED":
            if now and not before:
                self.queue.put_nowait(("ADDED", event.obj))
            elif before and not now:
                self.queue.put_nowait(("DELETED", event.obj))
            elif now:
                self.queue.put_nowait(("MODIFIED", event.obj))
        elif now:
            self.queue.put_nowait((event.type, event.obj))

    def drop(self) -> None:
        self.dropped = True
        self.queue.put_nowait(("__DROP__", {}))


class Store:
    """Objects by type and (namespace, name); resourceVersion; event window; watchers."""

    def __init__(self, event_window: int = 5000):
        self.rv = 0
        self.objects: dict[ResourceType, dict[Key, dict]] = {
            t: {} for t in resources.STORED_TYPES}
        # type -> namespace -> names: lists in one namespace don't scan the others
        self.by_namespace: dict[ResourceType, dict[str, set[str]]] = {
            t: {} for t in resources.STORED_TYPES}
        self.events: deque[Event] = deque(maxlen=event_window)
        self.compacted_rv = 0  # a watch may resume from any rv >= this
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[Event], None]] = []
        self._encoded: OrderedDict[str, bytes] = OrderedDict()
        self._encoded_max = max(event_window * 2, 20000)

    # ---------------------------------------------------------------- raw access

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def raw(self, rtype: ResourceType, namespace: str | None, name: str) -> dict | None:
        """The stored object itself (read-only by convention)."""
        return self.objects[rtype].get(((namespace or "") if rtype.namespaced else "", name))

    def raw_items(self, rtype: ResourceType, namespace: str | None = None) -> list[dict]:
        """Stored objects in key order (namespace, name), as etcd lists them."""
        bucket = self.objects[rtype]
        # list()/set() copies are one C call: safe against a writer in the server's thread
        if namespace:
            keys = sorted((namespace, n) for n in set(
                self.by_namespace[rtype].get(namespace, ())))
        else:
            keys = sorted(list(bucket))
        out = []
        for k in keys:
            obj = bucket.get(k)
            if obj is not None:
                out.append(obj)
        return out

    def put(self, rtype: ResourceType, obj: dict, event_type: str,
            old: dict | None = None) -> dict:
        """Store `obj` (already a fresh dict) with a new resourceVersion and emit an event."""
        rv = self.next_rv()
        meta = obj["metadata"]
        meta["resourceVersion"] = str(rv)
        key = (meta.get("namespace", "") if rtype.namespaced else "", meta["name"])
        self.objects[rtype][key] = obj
        self.by_namespace[rtype].setdefault(key[0], set()).add(key[1])
        self._emit(Event(rv, event_type, rtype, obj, old))
        return obj

    def remove(self, rtype: ResourceType, obj: dict) -> dict:
        """Remove the object; the DELETED event carries a new resourceVersion."""
        meta = obj["metadata"]
        key = (meta.get("namespace", "") if rtype.namespaced else "", meta["name"])
        old = self.objects[rtype].pop(key)
        names = self.by_namespace[rtype].get(key[0])
        if names is not None:
            names.discard(key[1])
            if not names:
                del self.by_namespace[rtype][key[0]]
        gone_obj = dict(old)
        gone_obj["metadata"] = dict(old["metadata"])
        rv = self.next_rv()
        gone_obj["metadata"]["resourceVersion"] = str(rv)
        self._emit(Event(rv, "DELETED", rtype, gone_obj, old))
        return gone_obj

    def _emit(self, event: Event) -> None:
        if len(self.events) == self.events.maxlen:
            self.compacted_rv = self.events[0].rv
        self.events.append(event)
        for w in list(self.watchers):
            w.offer(event)
        for listener in list(self.listeners):
            listener(event)

    def encode(self, obj: dict, *, list_item: bool = False) -> bytes:
        """The JSON of a stored object version, encoded once and shared by every list and
        watch that sends it (a version is identified by its unique resourceVersion).

        `list_item`: as an item of a list, which a real API server sends without `kind` and
        `apiVersion` (the list's own kind says them); watch events and GETs keep both."""
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        key = f"item:{rv}" if list_item else rv
        data = self._encoded.get(key) if rv is not None else None
        if data is None:
            if list_item:
                obj = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
            data = json.dumps(obj, separators=(",", ":")).encode()
            if rv is None:
                return data
            self._encoded[key] = data
            if len(self._encoded) > self._encoded_max:
                self._encoded.popitem(last=False)
        return data

    def compact(self) -> None:
        """Forget all events so far (as etcd compaction does): older watches get 410."""
        self.events.clear()
        self.compacted_rv = self.rv

    # ---------------------------------------------------------------- watch

    def subscribe(self, rtype: ResourceType, namespace: str | None, match: Callable,
                  since: int | None) -> Watcher:
        """A watcher primed with the events after `since` (None: the current objects)."""
        w = Watcher(rtype, namespace, match)
        if since is None:
            for obj in self.raw_items(rtype, namespace):
                if w.matches(obj):
                    w.queue.put_nowait(("ADDED", obj))
        else:
            if since < self.compacted_rv:
                raise gone(f"too old resource version: {since} ({self.compacted_rv + 1})")
            for ev in self.events:
                if ev.rv > since:
                    w.offer(ev)
        self.watchers.add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        self.watchers.discard(w)

    def drop_watches(self) -> int:
        """End every open watch stream abruptly, as a broken connection would."""
        n = len(self.watchers)
        for w in list(self.watchers):
            w.drop()
        self.watchers.clear()
        return n

    # ---------------------------------------------------------------- friendly reads

    def get(self, kind: str | ResourceType, name: str, namespace: str | None = None) -> dict:
        """A copy of one object by kind ('Pod' or a ResourceType); raises 404 APIError."""
        rtype = _rtype(kind)
        obj = self.raw(rtype, namespace, name)
        if obj is None:
            raise not_found(rtype.plural, rtype.group, name)
        return deep_copy(obj)

    def find(self, kind: str | ResourceType, name: str,
             namespace: str | None = None) -> dict | None:
        rtype = _rtype(kind)
        obj = self.raw(rtype, namespace, name)
        return deep_copy(obj) if obj is not None else None

    def list(self, kind: str | ResourceType, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None
             ) -> list[dict]:
        """Copies of the objects of a kind, optionally filtered like a list call."""
        rtype = _rtype(kind)
        lm = parse_label_selector(label_selector)
        fm = parse_field_selector(field_selector, rtype.kind)
        return [deep_copy(o) for o in self.raw_items(rtype, namespace)
                if lm(o) and fm(o)]

    def count(self) -> int:
        return sum(len(b) for b in self.objects.values())


def _rtype(kind: str | ResourceType) -> ResourceType:
    if isinstance(kind, ResourceType):
        return kind
    t = resources.by_kind(kind)
    if t is None:
        raise KeyError(f"unknown kind {kind!r}")
    return t

