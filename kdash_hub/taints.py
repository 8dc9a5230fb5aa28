"""Which taints a pod's tolerations let it past: one reading for the spawner's early refusals
and the local cluster's scheduler, so the hub never refuses what the scheduler would place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# taint effects a scheduler must respect (PreferNoSchedule is only a preference)
HARD_EFFECTS = ("NoSchedule", "NoExecute")


def tolerates(tolerations: Iterable[Mapping], taint: Mapping) -> bool:
    """True when one of the tolerations matches the taint (key, value and effect)."""
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        op = tol.get("operator") or "Equal"
        if op == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def untolerated_taint(tolerations: Iterable[Mapping], node: Mapping) -> Mapping | None:
    """The first NoSchedule/NoExecute taint of `node` that `tolerations` don't match."""
    tolerations = list(tolerations)
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in HARD_EFFECTS and not tolerates(tolerations, taint):
            return taint
    return None
