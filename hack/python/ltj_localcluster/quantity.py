"""Kubernetes resource quantities ("500m", "16Gi", "1e3") as exact Decimals."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")


class QuantityError(ValueError):
    pass


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity string into a Decimal of base units (cores, bytes, ...)."""
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    m = _RE.match(value.strip())
    if not m:
        raise QuantityError(f"not a quantity: {value!r}")
    number, exponent, suffix = m.groups()
    try:
        base = Decimal(number)
        if exponent:
            return base * (Decimal(10) ** int(exponent[1:]))
        return base * _SUFFIXES[suffix or ""]
    except (InvalidOperation, KeyError) as exc:  # pragma: no cover - regex guards this
        raise QuantityError(f"not a quantity: {value!r}") from exc


def divide_ceil(value: Decimal, divisor: Decimal) -> int:
    """The kubelet's resourceFieldRef rule: ceil(value / divisor), as an integer."""
    if divisor <= 0:
        raise QuantityError(f"divisor must be positive, got {divisor}")
    return int(math.ceil(value / divisor))
