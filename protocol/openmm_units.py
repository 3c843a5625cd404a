"""OpenMM quantities in: ``openmm.unit.Quantity`` values become pint quantities at the client.

OpenMM users hold energies, positions and box vectors as OpenMM quantities;
nstore stores pint quantities. :func:`storable` turns an OpenMM quantity (also
one inside a dict) into a pint quantity with the same unit before any driver
sees it, so the daemon never needs OpenMM. OpenMM is recognised by its type's
module and name, never imported here: a value of its type means it is loaded.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from typing import Any

from .errors import UnsupportedTypeError
from .units import parse_unit, registry

_QUANTITY_MODULES = frozenset({"openmm.unit.quantity", "simtk.unit.quantity"})
_VEC3_MODULES = frozenset({"openmm.vec3", "simtk.openmm.vec3"})
# The names of OpenMM's SI base units (si_unit_system), which pint spells the same way.
_SI_NAMES = frozenset({"kilogram", "meter", "second", "ampere", "kelvin", "mole", "candela", "radian"})


def is_openmm_quantity(value: Any) -> bool:
    """True for an ``openmm.unit.Quantity``, without importing OpenMM."""
    cls = type(value)
    if cls.__module__ not in _QUANTITY_MODULES or cls.__name__ != "Quantity":
        return False
    module = sys.modules.get("openmm.unit")
    return module is None or isinstance(value, module.Quantity)


def storable(value: Any, path: str) -> Any:
    """``value`` as nstore stores it: OpenMM quantities, at the top or inside a dict, become pint ones.

    Anything else is returned as it is (one type check: this is on every write and append).
    """
    cls = type(value)
    if cls is dict:
        return _storable_inside(value, path)
    if cls.__module__ in _QUANTITY_MODULES and is_openmm_quantity(value):
        return from_openmm(value, path)
    return value


def _storable_inside(value: Any, path: str) -> Any:
    """``value`` (inside a dict) with OpenMM quantities converted; the same object if it holds none."""
    if type(value) is dict:
        items = {key: _storable_inside(item, path) for key, item in value.items()}
        return items if any(items[key] is not value[key] for key in value) else value
    if type(value) in (list, tuple):
        items = [_storable_inside(item, path) for item in value]
        return type(value)(items) if any(new is not old for new, old in zip(items, value)) else value
    return from_openmm(value, path) if is_openmm_quantity(value) else value


def from_openmm(value: Any, path: str = "") -> Any:
    """A pint quantity equal to the OpenMM quantity ``value`` (lists of ``Vec3`` become (n, 3) arrays).

    Keeps OpenMM's unit where pint has one of the same name and size; OpenMM's
    ``dalton`` (a molar mass) becomes ``gram/mole``; any other unit (``item``,
    OpenMM's ``debye``) is converted by OpenMM to SI units first.
    """
    if not is_openmm_quantity(value):
        raise TypeError(f"from_openmm needs an openmm.unit.Quantity, not {type(value).__name__}")
    unit = pint_unit(value.unit)
    if unit is None:
        value = _in_si_units(value, path)
        unit = pint_unit(value.unit)
        if unit is None:
            raise ValueError(_no_equivalent(value, path))
    return registry().Quantity(_magnitude(value._value, path), unit)


def _no_equivalent(value: Any, path: str) -> str:
    where = f"{path}: " if path else ""
    return f"{where}OpenMM unit {str(value.unit)!r} has no SI form to check a pint unit against; store a number"


def _in_si_units(value: Any, path: str) -> Any:
    """``value`` converted by OpenMM to SI units (a Quantity also when dimensionless)."""
    import openmm.unit as mm

    try:
        converted = value.in_unit_system(mm.si_unit_system)
    except Exception:  # OpenMM raises TypeError for units outside its SI system (bits: nat, ban)
        raise ValueError(_no_equivalent(value, path)) from None
    return converted if is_openmm_quantity(converted) else mm.Quantity(converted, mm.dimensionless)


def _magnitude(value: Any, path: str) -> Any:
    import numpy as np

    if type(value).__module__ in _VEC3_MODULES:
        return np.array(value, dtype=np.float64)
    if type(value) in (list, tuple) and value and all(type(v).__module__ in _VEC3_MODULES for v in value):
        return np.array(value, dtype=np.float64)  # state.getPositions(): (n, 3)
    if isinstance(value, (int, float, list, tuple, np.ndarray, np.generic)):
        return value
    cls = type(value)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    raise UnsupportedTypeError(f"openmm.unit.Quantity of {name}", path)


@functools.lru_cache(maxsize=256)
def pint_unit(openmm_unit: Any) -> Any:
    """The pint unit of the same name and size as ``openmm_unit`` (cached per unit), or None."""
    try:
        unit = parse_unit(str(openmm_unit))  # OpenMM's spellings, as in classic files
    except ValueError:
        return None
    daltons = unit._units.get("dalton")
    if daltons:  # OpenMM's dalton is gram/mole; pint's is a mass
        reg = registry()
        unit = unit / reg.dalton ** daltons * (reg.gram / reg.mole) ** daltons
    return unit if same_meaning(unit, openmm_unit) else None


def same_meaning(unit: Any, openmm_unit: Any) -> bool:
    """True when the pint ``unit`` and ``openmm_unit`` are the same size (compared in SI units)."""
    import openmm.unit as mm

    try:
        si = (1.0 * openmm_unit).in_unit_system(mm.si_unit_system)
        factor, si_name = (si._value, si.unit.get_name()) if is_openmm_quantity(si) else (float(si), "")
        if not set(re.findall(r"[A-Za-z_]+", si_name)) <= _SI_NAMES:
            return False  # not expressible in SI (OpenMM's information units: nat, ban)
        ours = registry().Quantity(1.0, unit).to(parse_unit(si_name)).magnitude
    except Exception:  # pint's DimensionalityError, an SI name pint lacks, a unit OpenMM cannot put in SI
        return False
    return math.isclose(ours, factor, rel_tol=1e-9)
