"""``write_it02``: intensity traces back to IT02 files (dense or sparse layout).

Vectorised encoding (no per-record Python loop), written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._writing import (
    WRITE_CHUNK_ROWS,
    column_values,
    encode_preamble,
    inherited_header,
    refuse_unlisted_channels,
    require_columns,
    to_arrow_table,
    write_records,
)
from ._it02_layout import (
    _F64,
    _POPCOUNT,
    COUNT_BYTES,
    DERIVED_KEYS,
    IT02_MAGIC,
    LAYOUTS,
    MAX_SPARSE_CHANNELS,
    SPARSE_FIXED_BYTES,
    TIME_BYTES,
    _channels_problem,
    channel_column,
    dense_dtype,
)

#: Writer: sparse rows encoded per step (bounds its temporary index arrays to ~20 MB).
SPARSE_ENCODE_ROWS = 1 << 18

# -- the writer -------------------------------------------------------------------------


def _frame_channels(table: pa.Table) -> list[int]:
    """Channel indices from ``ch{i+1}`` column names, in frame order."""
    return [int(n[2:]) - 1 for n in table.column_names
            if n.startswith("ch") and n[2:].isdigit() and int(n[2:]) >= 1]


def write_it02(
    path: str | os.PathLike[str],
    frame: Any,
    header: Mapping[str, Any] | None = None,
    layout: str | None = None,
    acquisition_end_ns: float | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write an IT02 file from a frame with ``time_ns`` and ``ch{i+1}`` columns.

    Parameters
    ----------
    path:
        Destination. Written atomically: a failed write leaves no partial file.
    frame:
        pandas/polars/Arrow frame (or dict of columns): ``time_ns`` (float64) and one
        ``uint32``-compatible count column ``ch{i+1}`` per channel of the header; counts
        that do not fit ``uint32`` and nulls are refused.
    header:
        The JSON header; its ``channels`` decide which columns are written, in that order.
        bindf's derived keys ``layout`` and ``acquisition_end_ns`` are not written. When
        omitted, the header a bindf reader attached to ``frame`` is reused, else
        ``{"channels": [...]}`` from the ``ch*`` columns in frame order.
    layout:
        ``"sparse"`` (current software): bins in which every channel is zero are left
        out, and the file ends with the mask-0 end marker. ``"dense"``: every row, fixed
        size. By default the header's ``layout`` key (a frame bindf read keeps its
        layout), else ``"sparse"``.
    acquisition_end_ns:
        Sparse only: time of the end marker. By default the header's
        ``acquisition_end_ns`` if it is a number, else the largest ``time_ns`` (device
        time stamps mark the *end* of each bin), else 0. It must not be earlier than any
        ``time_ns``; in the sparse layout times must be finite.
    overwrite:
        ``False`` refuses to replace an existing file.
    """
    table = to_arrow_table(frame)
    header = inherited_header(frame, header)
    if header is None:
        header = {"channels": _frame_channels(table)}
    if layout is None:
        layout = header.get("layout") if header.get("layout") in LAYOUTS else "sparse"
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'dense' or 'sparse', not {layout!r}")
    problem = _channels_problem(header)
    if problem:
        raise ValueError(f"cannot write IT02: header {problem}")
    channels: list[int] = list(header["channels"])
    if layout == "sparse" and len(channels) > MAX_SPARSE_CHANNELS:
        raise ValueError(f"cannot write IT02: the sparse layout holds at most "
                         f"{MAX_SPARSE_CHANNELS} channels, the header has {len(channels)}")
    names = [channel_column(c) for c in channels]
    require_columns(table, ["time_ns", *names], "IT02 intensity tracing")
    refuse_unlisted_channels(table, names, "IT02")
    preamble = encode_preamble(
        IT02_MAGIC, {k: v for k, v in header.items() if k not in DERIVED_KEYS}
    )
    end = None
    if layout == "sparse":
        time = column_values(table, "time_ns", "<f8")
        if not np.isfinite(time).all():
            raise ValueError("cannot write IT02: time_ns must be finite in the sparse layout")
        last = float(time.max()) if len(time) else None
        end = acquisition_end_ns
        stored = header.get("acquisition_end_ns")
        if end is None and isinstance(stored, (int, float)) and not isinstance(stored, bool):
            end = stored
        end = float(end if end is not None else (last if last is not None else 0.0))
        if not math.isfinite(end) or (last is not None and end < last):
            raise ValueError(f"cannot write IT02: acquisition_end_ns {end} must be finite and "
                             f"not before the last time_ns ({last})")
    elif acquisition_end_ns is not None:
        raise ValueError("acquisition_end_ns is only stored in the sparse layout")

    with atomic_output(path, overwrite=overwrite) as f:
        f.write(preamble)
        for lo in range(0, table.num_rows, WRITE_CHUNK_ROWS):
            part = table.slice(lo, WRITE_CHUNK_ROWS)
            time = column_values(part, "time_ns", "<f8", first_row=lo)
            counts = [column_values(part, n, "<u4", first_row=lo) for n in names]
            if layout == "dense":
                write_records(f, _encode_dense(time, counts))
            else:  # the encoder's index arrays are ~70 bytes a row: smaller steps
                for i in range(0, len(time), SPARSE_ENCODE_ROWS):
                    step = slice(i, i + SPARSE_ENCODE_ROWS)
                    f.write(memoryview(_encode_sparse(time[step], [c[step] for c in counts])))
        if end is not None:
            f.write(_F64.pack(end) + b"\x00")


def _encode_dense(time: np.ndarray, counts: list[np.ndarray]) -> np.ndarray:
    records = np.empty(len(time), dtype=dense_dtype(len(counts)))
    records["time_ns"] = time
    for k, c in enumerate(counts):
        records[f"c{k}"] = c
    return records


def _encode_sparse(time: np.ndarray, counts: list[np.ndarray]) -> np.ndarray:
    """Sparse records of one slice of rows, all-zero rows left out, as bytes."""
    mask = np.zeros(len(time), dtype=np.uint8)
    for k, c in enumerate(counts):
        mask |= (c != 0).astype(np.uint8) << np.uint8(k)
    keep = mask != 0
    mask = mask[keep]
    time = time[keep]
    sizes = SPARSE_FIXED_BYTES + COUNT_BYTES * _POPCOUNT[mask].astype(np.int64)
    starts = np.cumsum(sizes) - sizes
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    out[starts[:, None] + np.arange(TIME_BYTES)] = time.astype("<f8").view(np.uint8).reshape(-1, 8)
    out[starts + TIME_BYTES] = mask
    for k, c in enumerate(counts):
        has = (mask >> np.uint8(k)) & np.uint8(1) == 1
        before = _POPCOUNT[mask[has] & np.uint8((1 << k) - 1)].astype(np.int64)
        where = starts[has] + SPARSE_FIXED_BYTES + COUNT_BYTES * before
        values = c[keep][has].astype("<u4").view(np.uint8).reshape(-1, 4)
        out[where[:, None] + np.arange(COUNT_BYTES)] = values
    return out
