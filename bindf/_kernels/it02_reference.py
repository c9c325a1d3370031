"""Slow pure-Python twin of ``_it02.pyx``, for the parity tests only.

Written for clarity, record by record, straight from the layout in docs/formats/it02.md. The
compiled kernel must give identical results (including the returned state) on any input.
"""

from __future__ import annotations

import math
import struct

import numpy as np

STATUS_END = 0
STATUS_LIMIT = 1
STATUS_BAD_MASK = 2
BIN_OK = 0
BIN_NOT_FINITE = 1
BIN_NOT_AFTER_PREVIOUS = 2
BIN_OUT_OF_RANGE = 3
MAX_SPARSE_CHANNELS = 8
SPARSE_FIXED_BYTES = 9
_MAX_BIN = 2.0**52


def _check_channels(n_channels: int) -> None:
    if not 0 <= n_channels <= MAX_SPARSE_CHANNELS:
        raise ValueError(f"n_channels must be 0..{MAX_SPARSE_CHANNELS}, not {n_channels}")


def scan_sparse(buf, pos: int, n_channels: int, max_rows: int) -> tuple[int, int, int]:
    _check_channels(n_channels)
    data = bytes(buf)
    if not 0 <= pos <= len(data):
        raise ValueError("pos outside the buffer")
    if max_rows < 0:
        raise ValueError("max_rows must be >= 0")
    rows = 0
    while True:
        if rows >= max_rows:
            return rows, pos, STATUS_LIMIT
        if len(data) - pos < SPARSE_FIXED_BYTES:
            return rows, pos, STATUS_END
        mask = data[pos + 8]
        if mask >> n_channels:
            return rows, pos, STATUS_BAD_MASK
        size = SPARSE_FIXED_BYTES + 4 * bin(mask).count("1")
        if len(data) - pos < size:
            return rows, pos, STATUS_END
        pos += size
        rows += 1


def decode_sparse(
    buf, pos: int, n_channels: int, max_rows: int, time_out: np.ndarray,
    counts_out: list[np.ndarray], slots: np.ndarray, want_time: bool,
) -> tuple[int, int, int]:
    _check_channels(n_channels)
    data = bytes(buf)
    if not 0 <= pos <= len(data) or max_rows < 0 or len(slots) < n_channels:
        raise ValueError("bad arguments")
    if len(counts_out) > MAX_SPARSE_CHANNELS:
        raise ValueError("too many count outputs")
    if any(not -1 <= int(s) < len(counts_out) for s in slots[:n_channels]):
        raise ValueError("slot out of range")
    if any(len(c) < max_rows for c in counts_out):
        raise ValueError("counts_out too small")
    if want_time and len(time_out) < max_rows:
        raise ValueError("time_out too small")
    rows = 0
    while True:
        if rows >= max_rows:
            return rows, pos, STATUS_LIMIT
        if len(data) - pos < SPARSE_FIXED_BYTES:
            return rows, pos, STATUS_END
        mask = data[pos + 8]
        if mask >> n_channels:
            return rows, pos, STATUS_BAD_MASK
        size = SPARSE_FIXED_BYTES + 4 * bin(mask).count("1")
        if len(data) - pos < size:
            return rows, pos, STATUS_END
        if want_time:
            time_out[rows] = struct.unpack_from("<d", data, pos)[0]
        p = pos + SPARSE_FIXED_BYTES
        for k in range(n_channels):
            if mask & (1 << k):
                (value,) = struct.unpack_from("<I", data, p)
                p += 4
            else:
                value = 0
            if slots[k] >= 0:
                counts_out[slots[k]][rows] = value
        pos += size
        rows += 1


def assign_bins(
    times: np.ndarray, bin_ns: float, have_last: bool, last_t: float, last_bin: int,
    bins_out: np.ndarray, status_out: np.ndarray,
) -> tuple[int, bool, float, int]:
    if len(bins_out) < len(times) or len(status_out) < len(times):
        raise ValueError("outputs too short")
    if not (math.isfinite(bin_ns) and bin_ns > 0):
        raise ValueError("bin_ns must be a positive finite number")
    n_bad = 0
    for i, t in enumerate(times.tolist()):
        if not math.isfinite(t):
            status_out[i] = BIN_NOT_FINITE
            n_bad += 1
            continue
        if have_last:
            x = (t - last_t) / bin_ns + 0.5  # may overflow to ±inf
            step = math.floor(x) if math.isfinite(x) else x
            if not step >= 1:
                status_out[i] = BIN_NOT_AFTER_PREVIOUS
                n_bad += 1
                continue
            b = last_bin + step
        else:
            x = t / bin_ns + 0.5
            b = math.floor(x) if math.isfinite(x) else x
        if not -_MAX_BIN <= b <= _MAX_BIN:
            status_out[i] = BIN_OUT_OF_RANGE
            n_bad += 1
            continue
        bins_out[i] = int(b)
        status_out[i] = BIN_OK
        have_last, last_t, last_bin = True, t, int(b)
    return n_bad, have_last, last_t, last_bin
