"""Kubernetes quantities in the canonical form the API server stores them in.

The API server parses every resource quantity and writes it back canonically
(apimachinery `resource.Quantity.CanonicalizeBytes`): `0.5` becomes `500m`, `1024Mi`
becomes `1Gi`, `2000` becomes `2k`, while `1500` and `1000Mi` stay as they are. The
emulator stores quantities this way so a client comparing them as strings fails as it
would against a real cluster. Written independently of the operator (which only compares
quantities by value), so the two cannot share a mistake.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12}
_DECIMAL_SUFFIXES |= {"P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_PATTERN = re.compile(r"^([+-]?[0-9.]+)(.*)$")


def canonical(text: str | int | float) -> str:
    """`text` as the API server would store it; ValueError when it is not a quantity."""
    raw = str(text).strip()
    match = _PATTERN.match(raw)
    if not match or raw.count(".") > 1 or match.group(1) in ("", ".", "+", "-"):
        raise ValueError(f"quantities must match the regular expression: {raw!r}")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix in _BINARY_SUFFIXES:
        value, fmt = number * (Decimal(1024) ** _BINARY_SUFFIXES[suffix]), "binary"
    elif suffix in _DECIMAL_SUFFIXES:
        value, fmt = number.scaleb(_DECIMAL_SUFFIXES[suffix]), "decimal"
    elif re.fullmatch(r"[eE][+-]?[0-9]+", suffix):
        value, fmt = number.scaleb(int(suffix[1:])), "exponent"
    else:
        raise ValueError(f"unable to parse quantity's suffix: {raw!r}")
    # Precision below nano is rounded up (ParseQuantity).
    value = value.quantize(Decimal("1e-9"), rounding=ROUND_CEILING)
    if value == 0:
        return "0"
    if fmt == "binary" and (abs(value) < 1024 or value != value.to_integral_value()):
        fmt = "decimal"  # small or fractional byte counts: no rounding, decimal suffixes
    if fmt == "binary":
        mantissa, power = int(value), 0
        while mantissa % 1024 == 0 and power < 6:
            mantissa, power = mantissa // 1024, power + 1
        suffixes = {v: k for k, v in _BINARY_SUFFIXES.items()}
        return f"{mantissa}{suffixes.get(power, '')}"
    # Decimal: the integer mantissa with the largest exponent that is a multiple of 3.
    sign, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
    if exponent % 3:
        mantissa *= 10 ** (exponent % 3)
        exponent -= exponent % 3
    if fmt == "exponent":
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    suffixes = {v: k for k, v in _DECIMAL_SUFFIXES.items()}
    if exponent > 18:  # beyond exa: the mantissa carries the rest
        mantissa, exponent = mantissa * 10 ** (exponent - 18), 18
    return f"{mantissa}{suffixes[exponent]}"
