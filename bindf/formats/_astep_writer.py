"""The A-STEP stream writer (``write_astep``): layer frames back to the ``.bin`` stream
that :class:`~bindf.formats.astep.AstepReader` reads. The layout is described in
:mod:`bindf.formats.astep`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._writing import (
    WRITE_CHUNK_ROWS,
    column_values,
    first_true,
    require_columns,
    to_arrow_table,
)
from .astep import FILLER, PAYLOAD_OF_CHIP, TS_WIDTHS, V4_BITS

_V3_WRITE = ("chip_id", "column", "location", "chip_timestamp")
_V4_WRITE = ("chip_id", "row", "column", "ts_neg1", "ts_coarse1", "ts_fine1", "ts_tdc1",
             "ts_neg2", "ts_coarse2", "ts_fine2", "ts_tdc2")


def write_astep(
    path: str | os.PathLike[str],
    frames: Any,
    header: Mapping[str, Any] | None = None,
    *,
    chip: int | None = None,
    ts_order: str | None = None,
    ts_bytes: int | None = None,
    filler: int | Sequence[int] | np.ndarray = 0,
    overwrite: bool = True,
) -> None:
    """Write layer frames as an A-STEP ``.bin`` stream that
    :class:`~bindf.formats.astep.AstepReader` reads back.

    Parameters
    ----------
    path:
        Destination; written atomically (a temporary file renamed into place).
    frames:
        pandas/polars frame, Arrow table or mapping of columns. Always ``layer`` and
        ``fpga_ts``. The sensor bytes come from the ``sensor`` column (binary, 1 to 8 bytes
        each, the first byte's low 3 bits = count - 1) when there is one, which writes
        wrong-length frames and any reserved bits exactly; otherwise they are encoded
        from the fields of ``chip`` 3 (``chip_id, column, location, chip_timestamp`` and
        ``tot_msb``/``tot_lsb`` or ``tot_total``; payload 4) or 4 (``chip_id, row,
        column, ts_neg1, ts_coarse1, ts_fine1, ts_tdc1, ts_neg2, ts_coarse2, ts_fine2,
        ts_tdc2``; payload 7). Other columns are ignored.
    header:
        A header as :class:`~bindf.formats.astep.AstepReader` reports it
        (``df.attrs["bindf"]["header"]``): its ``chip``, ``ts_order`` and ``ts_bytes``
        are the defaults of the options below, so a frame read back is written the way
        it was read. The stream itself has no header: nothing else of it is written.
    chip:
        3 or 4, for encoding from fields (default: the header's, else 3 if there is a
        ``location`` column, else 4).
    ts_order:
        ``"little"`` (firmware until November 2025; the default without a header) or
        ``"big"`` (since).
    ts_bytes:
        Timestamp width for every frame (2, 4, 6, 8). Default: the ``ts_bytes`` column
        if the frame has one, else 4 (the firmware's default).
    filler:
        ``0xFF`` filler bytes written after each frame (an int, or one per frame), as an
        empty readout FIFO leaves them.
    overwrite:
        Replace an existing file (default) or raise ``FileExistsError``.
    """
    given = dict(header or {})
    chip = given.get("chip") if chip is None else chip
    ts_order = (given.get("ts_order") or "little") if ts_order is None else ts_order
    ts_bytes = given.get("ts_bytes") if ts_bytes is None else ts_bytes
    if ts_order not in ("little", "big"):
        raise ValueError(f"ts_order must be 'little' or 'big', not {ts_order!r}")
    if ts_bytes is not None and ts_bytes not in TS_WIDTHS:
        raise ValueError(f"ts_bytes must be None or one of {TS_WIDTHS}, not {ts_bytes!r}")
    table = to_arrow_table(frames)
    require_columns(table, ("layer", "fpga_ts"), "an A-STEP stream")
    n = table.num_rows
    fill = np.broadcast_to(np.asarray(filler, dtype=np.int64), (n,))
    if n and fill.min() < 0:
        raise ValueError("filler must be >= 0")
    if "sensor" not in table.column_names:
        if chip is None:
            chip = 3 if "location" in table.column_names else 4
        if chip not in PAYLOAD_OF_CHIP:
            raise ValueError(f"chip must be 3 or 4, not {chip!r}")
    with atomic_output(path, overwrite=overwrite) as f:
        for start in range(0, n, WRITE_CHUNK_ROWS):
            part = table.slice(start, WRITE_CHUNK_ROWS)
            f.write(frame_block(part, chip, ts_order, ts_bytes,
                                fill[start : start + part.num_rows], start).data)


def frame_block(table: pa.Table, chip: int | None, ts_order: str, ts_bytes: int | None,
                fill: np.ndarray, first_row: int) -> np.ndarray:
    """The stream bytes of ``table``'s frames (vectorised): ``chip`` 3 or 4 encodes them
    from their fields when there is no ``sensor`` column, and ``fill[i]`` filler bytes
    follow frame ``i``. ``first_row`` (of ``table`` in the whole frame) numbers the rows
    that the ``ts_bytes``, ``fpga_ts`` and ``sensor`` errors name."""
    n = table.num_rows
    layer = column_values(table, "layer", np.uint8, first_row=first_row)
    fpga_ts = column_values(table, "fpga_ts", np.uint64, first_row=first_row)
    if ts_bytes is not None:
        width = np.full(n, ts_bytes, dtype=np.int64)
    elif "ts_bytes" in table.column_names:
        width = column_values(table, "ts_bytes", np.uint8, first_row=first_row).astype(np.int64)
        bad = ~np.isin(width, TS_WIDTHS)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"row {first_row + i}: ts_bytes {width[i]} is not one of {TS_WIDTHS}")
    else:
        width = np.full(n, 4, dtype=np.int64)
    # fpga_ts must fit in its width (a shift by 64 is undefined, hence the minimum)
    shift = (np.minimum(width, 7) * 8).astype(np.uint64)
    too_big = (width < 8) & ((fpga_ts >> shift) != 0)
    if too_big.any():
        i = int(np.flatnonzero(too_big)[0])
        raise ValueError(f"row {first_row + i}: fpga_ts {fpga_ts[i]} does not fit in {width[i]} bytes")

    if "sensor" in table.column_names:
        sensor_len, sensor_data, sensor_offsets = _sensor_column(table, first_row)
    else:
        word = (_encode_v3 if chip == 3 else _encode_v4)(table, first_row)
        sensor_len = np.full(n, PAYLOAD_OF_CHIP[chip] + 1, dtype=np.int64)
        as_bytes = word.astype(">u8").view(np.uint8).reshape(n, 8)
        sensor_data = as_bytes[:, : PAYLOAD_OF_CHIP[chip] + 1].ravel()
        sensor_offsets = np.arange(n + 1, dtype=np.int64) * (PAYLOAD_OF_CHIP[chip] + 1)

    length = 1 + sensor_len + width  # L
    step = 1 + length + fill
    start = np.cumsum(step) - step
    out = np.full(int(step.sum()), FILLER, dtype=np.uint8)
    out[start] = length.astype(np.uint8)
    out[start + 1] = layer
    out[np.repeat(start + 2 - sensor_offsets[:-1], sensor_len) + np.arange(len(sensor_data))] = sensor_data
    ts_le = fpga_ts.astype("<u8").view(np.uint8).reshape(n, 8)
    j = np.arange(8)
    keep = j < width[:, None]
    source_col = j if ts_order == "little" else (width[:, None] - 1 - j)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, 8))
    ts_bytes_out = ts_le[rows[keep], np.broadcast_to(source_col, (n, 8))[keep]]
    ts_pos = (start + 2 + sensor_len)[:, None] + j
    out[ts_pos[keep]] = ts_bytes_out
    return out


def _sensor_column(table: pa.Table, first_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(byte count, concatenated bytes, offsets)`` of the ``sensor`` column, validated."""
    column = table.column("sensor")
    if column.null_count:
        i = first_true(column.is_null())
        raise ValueError(f"column 'sensor' has {column.null_count} null value(s), the first "
                         f"in row {first_row + i}")
    try:
        array = column.combine_chunks().cast(pa.large_binary())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"column 'sensor' ({column.type}) is not binary: {exc}") from None
    # a sliced array's offsets start at its own offset into the shared buffers
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64,
                            count=array.offset + len(array) + 1)[array.offset :]
    data_buffer = array.buffers()[2]
    base = int(offsets[0])
    data = (np.frombuffer(data_buffer, dtype=np.uint8)[base : int(offsets[-1])]
            if data_buffer is not None else np.zeros(0, np.uint8))
    offsets = offsets - base
    count = np.diff(offsets)
    bad = (count < 1) | (count > 8)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"row {first_row + i}: sensor has {count[i]} bytes (1 to 8 fit a frame)")
    header = data[offsets[:-1]] if len(count) else np.zeros(0, np.uint8)
    bad = (header & 7).astype(np.int64) + 1 != count
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"row {first_row + i}: sensor header 0x{header[i]:02x} announces "
                         f"{(header[i] & 7) + 1} bytes but the row has {count[i]}")
    return count, data, offsets


def _field_values(table: pa.Table, name: str, bits: int, first_row: int) -> np.ndarray:
    values = column_values(table, name, np.uint64, first_row=first_row)
    if values.size and values.max() >> np.uint64(bits):
        i = int(np.flatnonzero(values >> np.uint64(bits))[0])
        raise ValueError(f"row {first_row + i}: {name} {values[i]} does not fit in {bits} bits")
    return values


def _encode_v3(table: pa.Table, first_row: int) -> np.ndarray:
    names = table.column_names
    missing = [c for c in _V3_WRITE if c not in names]
    if not ({"tot_msb", "tot_lsb"} <= set(names) or "tot_total" in names):
        missing.append("tot_msb/tot_lsb (or tot_total)")
    if missing:
        raise ValueError(f"cannot write AstroPix 3 frames: missing column(s) {missing}")
    if {"tot_msb", "tot_lsb"} <= set(names):
        msb = _field_values(table, "tot_msb", 4, first_row)
        lsb = _field_values(table, "tot_lsb", 8, first_row)
    else:
        total = _field_values(table, "tot_total", 12, first_row)
        msb, lsb = total >> np.uint64(8), total & np.uint64(0xFF)
    u = np.uint64
    return ((((_field_values(table, "chip_id", 5, first_row) << u(3)) | u(4)) << u(56))
            | (_field_values(table, "column", 1, first_row) << u(55))
            | (_field_values(table, "location", 6, first_row) << u(48))
            | (_field_values(table, "chip_timestamp", 8, first_row) << u(40))
            | (msb << u(32)) | (lsb << u(24)))


def _encode_v4(table: pa.Table, first_row: int) -> np.ndarray:
    missing = [c for c in _V4_WRITE if c not in table.column_names]
    if missing:
        raise ValueError(f"cannot write AstroPix 4 frames: missing column(s) {missing}")
    word = np.full(table.num_rows, np.uint64(7) << np.uint64(56))  # payload 7
    for name in _V4_WRITE:
        first, end = V4_BITS[name]
        word |= _field_values(table, name, end - first, first_row) << np.uint64(64 - end)
    return word
