"""Self-describing text for dicts and mixed lists: YAML with a few tags, never pickle.

Tags: ``!Quantity`` (the classic storage layer's spelling: a mapping of
``QuantityValue`` and ``QuantityUnit``), ``!ndarray`` (dtype, shape, data) and
``!tuple``. Loading uses yaml's *safe* loader plus these constructors only,
and refuses hostile text before building anything: longer than
:data:`MAX_TEXT_CHARS`, nested deeper than :data:`MAX_DEPTH`, aliases that
refer to themselves or expand to more than :data:`MAX_ALIAS_NODES` extra nodes
(a 432-byte "billion laughs" would otherwise expand to 10^9 values).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from nstore.protocol.errors import UnsupportedTypeError
from nstore.protocol.kinds.quantity import quantity_parts
from nstore.protocol.units import quantity
from nstore.protocol.values import check_dtype, type_name

_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_PLAIN_TYPES = (bool, int, float, str, list, dict)

MAX_TEXT_CHARS = 256 * 1024 * 1024  # the daemon's default data limit per op: nothing longer was written
MAX_DEPTH = 256  # nesting levels; the dumper cannot write much deeper (Python's recursion limit)
MAX_ALIAS_NODES = 1_000_000  # nodes that aliases may add beyond the distinct ones in the text


class StoredTextError(ValueError):
    """Stored text nstore refuses to load (unreadable, or hostile: too long, too deep, an alias bomb)."""


class _Dumper(_SafeDumper):
    def represent_data(self, data: Any):
        parts = quantity_parts(data)  # a pint Quantity, or the daemon's WireQuantity
        if parts is not None:
            magnitude, unit = parts
            if isinstance(magnitude, np.ndarray) and magnitude.ndim == 0:  # force_ndarray_like registries
                magnitude = magnitude.item()
            return self.represent_mapping("!Quantity", {"QuantityValue": magnitude, "QuantityUnit": unit})
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
    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_bounds(node)
        return node


def _check_bounds(root: yaml.Node) -> None:
    """StoredTextError if the composed node graph nests too deeply, loops, or aliases expand too much.

    One walk over the distinct nodes (an alias is the same node object again), so
    the check costs what the text costs, whatever the text would expand to.
    """
    expanded: dict[int, int] = {}  # id(collection node) -> nodes it stands for, aliases expanded
    depth: dict[int, int] = {}
    distinct = 0
    stack: list = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if type(node) is yaml.ScalarNode or key in expanded:
            continue
        children = [c for pair in node.value for c in pair] if type(node) is yaml.MappingNode else node.value
        inner = [c for c in children if type(c) is not yaml.ScalarNode]
        if finished:
            expanded[key] = 1 + len(children) - len(inner) + sum(expanded[id(c)] for c in inner)
            depth[key] = 1 + max((depth[id(c)] for c in inner), default=0)
            distinct += 1 + len(children) - len(inner)
            if depth[key] > MAX_DEPTH:
                raise StoredTextError(f"stored text nests deeper than {MAX_DEPTH} levels")
            continue
        if key in depth:  # started, not finished: we are inside it
            raise StoredTextError("stored text holds an alias that refers to itself")
        depth[key] = 0
        stack.append((node, True))
        stack.extend((c, False) for c in inner if id(c) not in expanded)
    if expanded[id(root)] - distinct > MAX_ALIAS_NODES:
        raise StoredTextError(f"stored text expands, through aliases, to {expanded[id(root)]} values "
                              f"(more than {MAX_ALIAS_NODES} beyond the {distinct} it holds)")


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
    """The value ``dumps`` wrote (or the classic layer's YAML dict text); StoredTextError if refused."""
    if len(text) > MAX_TEXT_CHARS:
        raise StoredTextError(f"stored text is {len(text)} characters long, more than {MAX_TEXT_CHARS}")
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise StoredTextError(f"stored text is not readable YAML: {exc}") from None
    except RecursionError:  # (only yaml's pure-Python composer recurses before our depth check)
        raise StoredTextError(f"stored text nests deeper than {MAX_DEPTH} levels") from None
    except (KeyError, TypeError, AttributeError) as exc:  # e.g. an !ndarray without its dtype
        raise StoredTextError(f"stored text has a malformed tag: {type(exc).__name__}: {exc}") from None
