"""Converting a stored value's magnitude to the variable's unit (compatible units only)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from nstore.protocol.units import converter

from .kinds import TEXT, Signature


def unit_converter(path: str, unit: str, stored: Signature) -> Callable[[Any], Any]:
    """Magnitudes in ``unit`` -> magnitudes in the ``stored`` unit; pint's DimensionalityError
    (naming ``path``) when they are incompatible."""
    try:
        convert = converter(unit, stored.unit)
    except Exception as exc:
        if type(exc).__name__ == "DimensionalityError":
            exc.extra_msg = f" (storing at {path})"
        raise
    if stored.dtype is not TEXT and stored.dtype.kind in "iu":
        return _whole_numbers(convert, path, stored.unit)
    return convert


def _whole_numbers(convert: Callable[[Any], Any], path: str, unit: str) -> Callable[[Any], np.ndarray]:
    """``convert`` for a variable of integers: refuses results that are not whole numbers.

    (Without this, 3 centimeter appended to a variable of integer meters would be
    truncated to 0.)
    """

    def whole(magnitude: Any) -> np.ndarray:
        value = np.asarray(convert(magnitude), dtype=np.float64)
        rounded = np.rint(value)
        exact = np.isclose(value, rounded, rtol=1e-9, atol=0.0)
        if not exact.all():
            shown = value.tolist() if value.size <= 4 else f"{value.flat[np.argmin(exact)]} (among {value.size} values)"
            raise ValueError(f"{path}: the variable stores whole numbers of {unit}; {shown} {unit} is not")
        return rounded

    return whole
