"""Units with pint: one application registry, unit strings parsed safely and cached.

pint is imported on first use only, so ``import nstore`` stays light. Parsing a
unit string costs tens of microseconds in pint; every function here caches by
string so the hot path pays that once per unit.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

MAX_UNIT_LENGTH = 256
_MAX_EXPONENT = 64
_EXPONENT = re.compile(r"(\*\*|\^)\s*\(?\s*(-?[0-9.eE+]+)")


@functools.lru_cache(maxsize=1)
def registry():
    """pint's application registry (``nstore.ureg``)."""
    import pint

    return pint.get_application_registry()


def is_quantity(value: Any) -> bool:
    """True for a pint Quantity, without importing pint if the caller never used it."""
    cls = type(value)
    return cls.__module__.startswith("pint") and hasattr(value, "magnitude") and hasattr(value, "units")


def unit_string(unit: Any) -> str:
    """The stored spelling of a unit: pint's compact form, e.g. ``kilojoule/mole``."""
    return _unit_string_cached(str(unit)) if not isinstance(unit, str) else _unit_string_cached(unit)


@functools.lru_cache(maxsize=1024)
def _unit_string_cached(text: str) -> str:
    return format(parse_unit(text), "C")


def _classic_spelling(text: str) -> str:
    """Accept the spellings openmm writes: ``/picosecond`` means ``1/picosecond``."""
    text = text.strip()
    if text.startswith("/"):
        text = "1" + text
    return text


@functools.lru_cache(maxsize=1024)
def parse_unit(text: str):
    """A pint Unit from a stored or sent unit string; ValueError when it is not one.

    Uses pint's own parser (no eval), bounds the length and exponents so a
    hostile string cannot make pint build absurd objects.
    """
    if not isinstance(text, str):
        raise ValueError(f"unit must be a string, not {type(text).__name__}")
    if len(text) > MAX_UNIT_LENGTH:
        raise ValueError(f"unit string longer than {MAX_UNIT_LENGTH} characters")
    for match in _EXPONENT.finditer(text):
        try:
            exponent = float(match.group(2))
        except ValueError:
            raise ValueError(f"unit {text!r}: unreadable exponent") from None
        if abs(exponent) > _MAX_EXPONENT:
            raise ValueError(f"unit {text!r}: exponent {match.group(2)} out of range")
    if text in ("", "NoneType", "dimensionless"):
        return registry().dimensionless
    try:
        quantity = registry().parse_expression(_classic_spelling(text))
    except Exception as exc:  # pint raises many types for bad input
        raise ValueError(f"unit {text!r} is not a unit pint understands ({type(exc).__name__})") from None
    if not hasattr(quantity, "units"):
        raise ValueError(f"unit {text!r} is a number, not a unit")
    if getattr(quantity, "magnitude", 1) != 1:
        raise ValueError(f"unit {text!r} carries a scale factor; store the scaled value instead")
    return quantity.units


@functools.lru_cache(maxsize=4096)
def converter(from_unit: str, to_unit: str) -> Callable[[Any], Any]:
    """A function mapping magnitudes in ``from_unit`` to ``to_unit``.

    Raises pint's DimensionalityError when the two are incompatible. For
    multiplicative units it is a cached factor (about 0.1 us per call).
    """
    src, dst = parse_unit(from_unit), parse_unit(to_unit)
    if src == dst:
        return _identity
    Q = registry().Quantity
    factor = float(Q(1.0, src).to(dst).magnitude)  # DimensionalityError when incompatible
    if float(Q(0.0, src).to(dst).magnitude) == 0.0:  # no offset (not degC/degF)
        return lambda magnitude: _scale(magnitude, factor)
    return lambda magnitude: Q(magnitude, src).to(dst).magnitude


def _identity(magnitude: Any) -> Any:
    return magnitude


def _scale(magnitude: Any, factor: float) -> Any:
    if isinstance(magnitude, (list, tuple)):
        return type(magnitude)(x * factor for x in magnitude)
    return magnitude * factor


def quantity(magnitude: Any, unit: str):
    """Build a Quantity of the application registry from a magnitude and unit string."""
    return registry().Quantity(magnitude, parse_unit(unit))
