"""Units for users: pint quantities read back from nstore, and the way back to OpenMM.

nstore stores and returns pint quantities; OpenMM quantities are converted on
the way in. ``to_openmm(q)`` turns a quantity read back into an
``openmm.unit.Quantity`` (OpenMM is imported only then).

``dalton`` differs: OpenMM's dalton is a molar mass (1 Da = 1 g/mol), pint's a
mass (1 Da = 1.66e-27 kg). OpenMM daltons are therefore stored as ``gram/mole``,
and ``to_openmm`` refuses a pint quantity in daltons rather than guess which
one its numbers mean.
"""

from __future__ import annotations

import functools
from typing import Any

from nstore.protocol.openmm_units import from_openmm, same_meaning
from nstore.protocol.units import is_quantity, parse_unit, registry, unit_string

__all__ = ["to_openmm", "from_openmm"]

# pint's canonical names that OpenMM spells differently (same_meaning still checks them).
_OPENMM_NAMES = {"standard_atmosphere": "atmosphere"}

DALTON_REFUSAL = (
    "pint's dalton is a mass (1.66e-27 kg) but OpenMM's dalton is a molar mass (g/mol), so nstore does not "
    "convert it silently: if the numbers are OpenMM molar masses (as in classic files), use "
    "q.magnitude * openmm.unit.dalton; if they are masses, use to_openmm(q.to('kilogram'))"
)


def to_openmm(q: Any) -> Any:
    """An ``openmm.unit.Quantity`` equal to the pint quantity ``q``; its magnitude keeps its type.

    Units OpenMM names the same way keep their name (``kilojoule/mole``); others are
    converted to SI base units first. ValueError for ``dalton`` (see the module docstring).
    """
    if not is_quantity(q):
        raise TypeError(f"to_openmm needs a pint Quantity, not {type(q).__name__}")
    import openmm.unit as mm

    openmm_unit, convert_to = _openmm_unit(unit_string(q.units))
    magnitude = q.to(convert_to).magnitude if convert_to is not None else q.magnitude
    return mm.Quantity(magnitude, openmm_unit)


@functools.lru_cache(maxsize=256)
def _openmm_unit(text: str) -> tuple[Any, Any]:
    """``(OpenMM unit, pint unit to convert to first or None)`` for a stored unit string."""
    unit = parse_unit(text)
    if "dalton" in unit._units:
        raise ValueError(f"{text!r}: {DALTON_REFUSAL}")
    named = _by_names(unit)
    if named is not None and same_meaning(unit, named):
        return named, None
    base = registry().Quantity(1.0, unit).to_base_units().units
    named = _by_names(base)
    if named is None or not same_meaning(base, named):
        raise ValueError(f"{text!r}: no OpenMM unit has the same meaning")
    return named, base


def _by_names(unit: Any) -> Any:
    """The OpenMM unit built from the same unit names as the pint ``unit``, or None if one is missing."""
    import openmm.unit as mm

    result = mm.dimensionless
    for name, exponent in unit._units.items():
        factor = getattr(mm, _OPENMM_NAMES.get(name, name), None)
        if not isinstance(factor, mm.Unit):
            return None
        result = result * factor ** exponent
    return result
