"""Kubernetes resource quantities ("500m", "32Gi", "1e3", 4), parsed in one place.

The spawner (quotas, free GPUs), the local scheduler and the emulated API server's quota
admission all compare quantities; they must agree on what a quantity means.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}
# a signed decimal number, then a binary/decimal suffix or a decimal exponent
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[a-zA-Z]*)$")


def parse_quantity(value: Any) -> Decimal:
    """A quantity as an exact Decimal of base units; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    return _parse_text(str(value).strip())


@functools.lru_cache(maxsize=4096)
def _parse_text(text: str) -> Decimal:
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"invalid quantity {text!r}")
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        if suffix in _SUFFIXES:
            return Decimal(number) * _SUFFIXES[suffix]
    except InvalidOperation:
        pass
    raise ValueError(f"invalid quantity {text!r}")
