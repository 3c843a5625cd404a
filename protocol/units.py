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
# Unit strings are checked token by token before pint sees them (see _check_syntax).
_NAME_CHARS = r"\w%°‰∞"  # pint's unit names: letters, digits, _, and a few symbols (%, °C, ‰, R_∞)
_TOKEN = re.compile(
    rf"(?P<ws>\s+)|(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?![{_NAME_CHARS}.])"
    rf"|(?P<name>(?:[^\W\d]|[%°‰∞])[{_NAME_CHARS}]*)|(?P<pow>\*\*|\^)|(?P<op>[*/()])|(?P<sign>[+-])"
)


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


@functools.lru_cache(maxsize=1024)
def stored_unit(text: str) -> str:
    """The stored spelling of the unit ``text`` names (``nm`` -> ``nanometer``); ValueError if it names none.

    What ``unit_string(quantity(x, text).units)`` gives, without building a
    Quantity; cached per string, so a unit seen before costs a dict lookup.
    """
    return unit_string(parse_unit(text))


def _classic_spelling(text: str) -> str:
    """Accept the spellings openmm writes: ``/picosecond`` means ``1/picosecond``."""
    text = text.strip()
    if text.startswith("/"):
        text = "1" + text
    for name in ("elementary charge", "electron volt", "julian year"):  # openmm names with a space
        text = text.replace(name, name.replace(" ", "_"))
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
    if text in ("", "NoneType", "dimensionless"):
        return registry().dimensionless
    spelled = _classic_spelling(text)
    _check_syntax(text, spelled)
    try:
        quantity = registry().parse_expression(spelled)
    except Exception as exc:  # pint raises many types for bad input
        raise ValueError(f"unit {text!r} is not a unit pint understands ({type(exc).__name__})") from None
    if not hasattr(quantity, "units"):
        raise ValueError(f"unit {text!r} is a number, not a unit")
    if getattr(quantity, "magnitude", 1) != 1:
        raise ValueError(f"unit {text!r} carries a scale factor; store the scaled value instead")
    for name, exponent in getattr(quantity.units, "_units", {}).items():
        if not abs(exponent) <= _MAX_EXPONENT:  # (also refuses nan)
            raise ValueError(f"unit {text!r}: exponent {exponent} of {name} out of range (at most {_MAX_EXPONENT})")
    return quantity.units


def _check_syntax(text: str, spelled: str) -> None:
    """ValueError unless ``spelled`` is unit names, ``*``, ``/``, parentheses and literal exponents.

    pint evaluates what it parses, with Python integers: ``9**9**9`` would keep
    the daemon busy for hours. So before pint sees a string, it must be made of
    unit names (``kilojoule``, ``°C``, ``%``), ``*``, ``/``, parentheses,
    whitespace and powers whose exponent is a literal number of at most
    ``_MAX_EXPONENT`` (``m**2``, ``s^-1``, ``m**(-0.5)``); a number elsewhere
    may only be ``1`` (as in ``1/second``), and nothing is raised to a power twice.
    """
    tokens, position = [], 0
    while position < len(spelled):
        match = _TOKEN.match(spelled, position)
        if match is None:
            raise ValueError(f"unit {text!r}: unexpected character {spelled[position]!r}")
        position = match.end()
        if match.lastgroup != "ws":
            tokens.append((match.lastgroup, match.group()))
    i = 0
    while i < len(tokens):
        kind, token = tokens[i]
        if kind == "pow":
            j = i + 1
            parenthesized = j < len(tokens) and tokens[j] == ("op", "(")
            j += parenthesized
            j += j < len(tokens) and tokens[j][0] == "sign"
            if j >= len(tokens) or tokens[j][0] != "number":
                raise ValueError(f"unit {text!r}: an exponent must be a number")
            exponent = float(tokens[j][1])
            if tokens[j - 1] == ("sign", "-"):
                exponent = -exponent
            if not abs(exponent) <= _MAX_EXPONENT:
                raise ValueError(f"unit {text!r}: exponent {exponent:g} out of range (at most {_MAX_EXPONENT})")
            if parenthesized:
                j += 1
                if j >= len(tokens) or tokens[j] != ("op", ")"):
                    raise ValueError(f"unit {text!r}: an exponent must be a number")
            if j + 1 < len(tokens) and tokens[j + 1][0] == "pow":
                raise ValueError(f"unit {text!r}: an exponent cannot be raised to a power")
            i = j + 1
            continue
        if kind == "sign":
            raise ValueError(f"unit {text!r}: '{token}' is only allowed in an exponent")
        if kind == "number" and float(token) != 1.0:
            raise ValueError(f"unit {text!r} carries a number ({token}); only exponents and 1 (as in 1/second) may")
        i += 1


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
