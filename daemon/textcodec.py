"""Self-describing text for dicts and mixed lists: YAML with a few tags, never pickle.

Tags: ``!Quantity`` (the classic storage layer's spelling: a mapping of
``QuantityValue`` and ``QuantityUnit``), ``!ndarray`` (dtype, shape, data) and
``!tuple``. Loading uses yaml's *safe* loader plus these constructors only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from nstore.protocol.errors import UnsupportedTypeError
from nstore.protocol.units import is_quantity, quantity, unit_string
from nstore.protocol.values import check_dtype, type_name

_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_PLAIN_TYPES = (bool, int, float, str, list, dict)


class _Dumper(_SafeDumper):
    def represent_data(self, data: Any):
        if is_quantity(data):
            magnitude = data.magnitude
            if isinstance(magnitude, np.ndarray) and magnitude.ndim == 0:  # force_ndarray_like registries
                magnitude = magnitude.item()
            mapping = {"QuantityValue": magnitude, "QuantityUnit": unit_string(data.units)}
            return self.represent_mapping("!Quantity", mapping)
        if isinstance(data, np.ndarray):
            try:
                check_dtype(data.dtype)
            except TypeError:
                raise UnsupportedTypeError(f"numpy.ndarray of {data.dtype}") from None
            mapping = {"dtype": data.dtype.name, "shape": list(data.shape), "data": data.reshape(-1).tolist()}
            return self.represent_mapping("!ndarray", mapping)
        if isinstance(data, np.generic):
            item = data.item()
            if isinstance(item, np.generic):  # e.g. longdouble: no Python equivalent
                raise UnsupportedTypeError(type_name(data))
            return self.represent_data(item)
        if type(data) is tuple:
            return self.represent_sequence("!tuple", list(data))
        if data is None or type(data) in _PLAIN_TYPES:
            return super().represent_data(data)
        # yaml's safe dumper would also take sets, bytes, dates, ...: not nstore types.
        raise UnsupportedTypeError(type_name(data))


class _Loader(_SafeLoader):
    pass


def _construct_quantity(loader: _Loader, node: yaml.Node) -> Any:
    mapping = loader.construct_mapping(node, deep=True)
    return quantity(mapping["QuantityValue"], str(mapping["QuantityUnit"]))


def _construct_ndarray(loader: _Loader, node: yaml.Node) -> np.ndarray:
    mapping = loader.construct_mapping(node, deep=True)
    dtype = check_dtype(mapping["dtype"])
    return np.array(mapping["data"], dtype=dtype).reshape(tuple(mapping["shape"]))


def _construct_tuple(loader: _Loader, node: yaml.Node) -> tuple:
    return tuple(loader.construct_sequence(node, deep=True))


_Loader.add_constructor("!Quantity", _construct_quantity)
_Loader.add_constructor("!ndarray", _construct_ndarray)
_Loader.add_constructor("!tuple", _construct_tuple)
_Loader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)  # the classic layer's spelling


def dumps(value: Any) -> str:
    """YAML text for ``value``; UnsupportedTypeError names a type it cannot hold."""
    try:
        return yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    except UnsupportedTypeError:
        raise
    except yaml.representer.RepresenterError as exc:
        offender = exc.args[1] if len(exc.args) > 1 else exc
        raise UnsupportedTypeError(type_name(offender)) from None
    except TypeError as exc:  # check_dtype on an array inside
        raise UnsupportedTypeError(f"numpy.ndarray ({exc})") from None


def loads(text: str) -> Any:
    """The value ``dumps`` wrote (or the classic layer's YAML dict text)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ValueError(f"stored text is not readable YAML: {exc}") from None
