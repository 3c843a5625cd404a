"""Rebuilding a file that a crash left with unreadable variables.

An HDF5 flush is not atomic: a SIGKILL in the middle of one (a checkpoint)
can leave a variable created since the previous checkpoint unreadable, its
header on disk but not its chunk index. Replaying the journal into it fails.
:func:`rebuild` then copies everything still readable into a new file,
replays the journal into that copy (which holds every entry of variables
created since the last checkpoint), and swaps it in. The damaged original is
kept next to it (``run.nc.damaged-<time>``): nothing is deleted. The copy is
built in a private directory and renamed into place, so a link planted at
``run.nc.rebuild`` is refused, never written through (netCDF follows links).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Any

import netCDF4
import numpy as np

from .safefiles import refuse_link

log = logging.getLogger("nstored")

COPY_BLOCK_BYTES = 64 * 1024 * 1024


def copy_readable(source: str, target: str) -> list[str]:
    """Copy every readable variable (data, attributes, groups, dimensions); returns the unreadable ones."""
    refuse_link(target)
    private = tempfile.mkdtemp(prefix=os.path.basename(target) + ".", dir=os.path.dirname(os.path.abspath(target)))
    try:
        built = os.path.join(private, "copy.nc")
        skipped: list[str] = []
        with netCDF4.Dataset(source, "r") as src, netCDF4.Dataset(built, "w", format="NETCDF4") as dst:
            _copy_group(src, dst, "", skipped)
        os.rename(built, target)  # replaces a leftover copy, never writes through a link
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return skipped


def _copy_group(src: Any, dst: Any, prefix: str, skipped: list[str]) -> None:
    dst.setncatts({name: src.getncattr(name) for name in src.ncattrs()})
    for name, dim in src.dimensions.items():
        dst.createDimension(name, None if dim.isunlimited() else len(dim))
    for name, var in src.variables.items():
        try:
            _copy_variable(var, dst, name)
        except Exception as exc:  # noqa: BLE001 - an unreadable variable is what we work around
            log.error("repair: %s%s is unreadable (%s); it is rebuilt from the journal if it can be",
                      prefix, name, exc)
            skipped.append(prefix + name)
            if name in dst.variables:
                raise RuntimeError(f"repair: half-copied {prefix}{name} cannot be removed") from exc
    for name, group in src.groups.items():
        _copy_group(group, dst.createGroup(name), f"{prefix}{name}/", skipped)


def _copy_variable(var: Any, dst: Any, name: str) -> None:
    var.set_auto_mask(False)
    length = var.shape[0] if var.ndim else 0
    row_bytes = var.dtype.itemsize * int(np.prod(var.shape[1:], dtype=np.int64)) if var.dtype is not str else 256
    step = max(1, COPY_BLOCK_BYTES // max(1, row_bytes))
    blocks = [var[start : start + step] for start in range(0, length, step)] if var.ndim else [var[...]]
    chunking = var.chunking()
    options: dict[str, Any] = {} if chunking == "contiguous" else {"chunksizes": tuple(chunking)}
    if var.dtype is not str:
        options["fill_value"] = False
    new = dst.createVariable(name, var.dtype, var.dimensions, **options)
    new.setncatts({key: var.getncattr(key) for key in var.ncattrs() if key != "_FillValue"})
    if not var.ndim:
        new[...] = blocks[0]
        return
    start = 0
    for block in blocks:
        new[start : start + len(block)] = block
        start += len(block)


def swap_in(file_name: str, rebuilt: str) -> str:
    """Replace ``file_name`` by ``rebuilt``, keeping the original as ``.damaged-<time>``."""
    kept = base = f"{file_name}.damaged-{int(time.time())}"
    n = 0
    while os.path.lexists(kept):  # an earlier copy (or a planted link): never replaced
        n += 1
        kept = f"{base}.{n}"
    os.replace(file_name, kept)
    os.replace(rebuilt, file_name)
    return kept
