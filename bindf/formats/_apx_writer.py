"""The AstroPix ``.apx`` writer (``write_apx``): hit tables back to files that
``read_apx`` decodes exactly, AstroPix 4 (``readout_uid`` 4000) and AstroPix 3 (3000).
The layout is described in :mod:`bindf.formats.apx`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._params import check_count
from .._writing import column_values, encode_preamble, inherited_header, to_arrow_table
from . import _apx3_hits as apx3
from ._apx_hits import encode_hits
from .apx import (
    APX3_READOUT_UID,
    APX4_READOUT_UID,
    IDLE_BYTE,
    MAGIC,
    READOUT_DTYPE,
    READOUT_HEADER_SIZE,
    READOUT_MARKER,
    SUPPORTED_READOUTS,
)

# -- writer ----------------------------------------------------------------------------
_REQUIRED_WRITE = ("readout_id", "timestamp", "chip_id", "row", "column", "ts_neg1", "ts_tdc1",
                   "ts_neg2", "ts_tdc2")
_WRITE_BLOCK_READOUTS = 1 << 16


def write_apx(
    path: str | os.PathLike[str],
    hits: Any,
    header: Mapping[str, Any] | None = None,
    *,
    leading_idle: int = 2,
    idle_between: int | Sequence[int] | np.ndarray = 0,
    trailing_idle: int = 6,
    overwrite: bool = True,
) -> None:
    """Write hits as an AstroPix ``.apx`` file that ``read_apx`` decodes back exactly.

    The chip generation is the header's ``readout_uid``: 4000 (AstroPix 4) or 3000
    (AstroPix 3). Without one, a table with a ``location`` column and no ``row`` column
    (the AstroPix 3 hit table) is written as AstroPix 3, anything else as AstroPix 4.
    AstroPix 3 hits need ``chip_id, column, location`` and ``tot_msb``/``tot_lsb`` (or
    ``tot_dec``), ``readout_id`` and ``wall_timestamp`` (or ``timestamp``);
    ``chip_timestamp`` (default 0) and ``payload`` (must be 4) are optional.

    Parameters
    ----------
    path:
        Destination; written atomically (a temporary file renamed into place).
    hits:
        pandas/polars frame, Arrow table or mapping of arrays with the hit fields
        ``chip_id, row, column, ts_neg1, ts_coarse1, ts_fine1, ts_tdc1, ts_neg2,
        ts_coarse2, ts_fine2, ts_tdc2`` plus ``readout_id`` and ``timestamp``.
        ``payload`` is optional (it must be 7: only then is the first byte a start byte).
        ``ts_coarseN``/``ts_fineN`` may be replaced by ``ts_decN`` (Gray-encoded back).
        ``decoding_order``, ``tot_us`` and other columns are ignored (they are derived).
        The fields are integers; a float column (a pandas merge or reindex makes them)
        is cast safely, as by every writer: whole numbers are written, a fraction, NaN
        or null is a ``ValueError`` naming the column.
        Consecutive rows with the same ``readout_id`` form one readout, in row order;
        they must share one ``timestamp``.
    header:
        Run metadata (JSON-able); ``None``: the header a bindf reader attached to
        ``hits``, if any (so ``write_apx(path, read_apx(run))`` keeps the run's
        configuration). ``readout_uid`` is added when missing (see above); a value other
        than 4000 or 3000 is refused.
    leading_idle, idle_between, trailing_idle:
        Idle bytes (``0xBC``) at the start of each payload, after each hit that another
        hit of the same readout follows (an int, or one value per hit), and at the end.
        ``trailing_idle`` must be ≥ 1: the decoder treats a hit that ends exactly at the
        end of a payload as a cut hit (the upstream ``c + 8 >= n`` rule), and the writer
        never produces trailing ``0xFF`` padding (the DAQ strips it).
    overwrite:
        Replace an existing file (default) or raise ``FileExistsError``.
    """
    table = to_arrow_table(hits)
    meta = inherited_header(hits, header) or {}
    astropix3 = "location" in table.column_names and "row" not in table.column_names
    uid = meta.setdefault("readout_uid", APX3_READOUT_UID if astropix3 else APX4_READOUT_UID)
    if type(uid) is not int or uid not in SUPPORTED_READOUTS:
        raise ValueError("write_apx writes AstroPix 4 and AstroPix 3 files (readout_uid "
                         f"4000 or 3000), not {uid!r}")
    columns = _apx3_hit_arrays(table) if uid == APX3_READOUT_UID else _hit_arrays(table)
    n = len(columns["readout_id"])
    if "readout_uid" != next(iter(meta)):
        meta = {"readout_uid": uid, **{k: v for k, v in meta.items() if k != "readout_uid"}}
    # strict JSON that reads back (or a ValueError), spaced as the DAQ writes it
    preamble = encode_preamble(MAGIC, meta, compact=False)
    check_count("leading_idle", leading_idle, 0, optional=False)
    check_count("trailing_idle", trailing_idle, 1, optional=False)  # (a hit ending a payload reads as cut)
    gaps = _idle_between(idle_between, n)

    rid, ts = columns["readout_id"], columns["timestamp"]
    new_readout = np.empty(n, dtype=bool)
    new_readout[:1] = True
    np.not_equal(rid[1:], rid[:-1], out=new_readout[1:])
    starts = np.flatnonzero(new_readout)
    ends = np.append(starts[1:], n)
    differs = ts != np.repeat(ts[starts], ends - starts)
    if differs.any():
        raise ValueError(f"hit {int(np.flatnonzero(differs)[0])}: hits of one readout must "
                         "share its timestamp")
    del new_readout, differs

    # Block by block (whole readouts), so that the uint64 work arrays stay small; any
    # error discards the temporary file.
    with atomic_output(path, overwrite=overwrite) as f:
        f.write(preamble)
        for first in range(0, len(starts), _WRITE_BLOCK_READOUTS):
            block_starts = starts[first : first + _WRITE_BLOCK_READOUTS]
            block_ends = ends[first : first + _WRITE_BLOCK_READOUTS]
            h0, h1 = int(block_starts[0]), int(block_ends[-1])
            block = {name: values[h0:h1] for name, values in columns.items()}
            encode = apx3.encode_hits if uid == APX3_READOUT_UID else encode_hits
            f.write(readout_records(
                encode(block, first_index=h0), rid[block_starts], ts[block_starts],
                block_ends - block_starts, leading_idle=leading_idle,
                idle_between=gaps[h0:h1], trailing_idle=trailing_idle).data)


def _idle_between(idle_between: Any, n: int) -> np.ndarray:
    """``idle_between`` as one count per hit: an int, or one non-negative integer per
    hit (a ValueError naming it otherwise, not numpy's broadcasting message)."""
    values = np.asarray(idle_between)
    if values.dtype.kind not in "iu" or values.ndim > 1 or (values.ndim and len(values) != n):
        raise ValueError(f"idle_between must be an integer or one integer per hit ({n}), "
                         f"not {idle_between!r}")
    if values.size and values.min() < 0:
        raise ValueError("idle_between must be >= 0")
    return np.broadcast_to(values.astype(np.int64), (n,))


def readout_records(raw: np.ndarray, readout_id: np.ndarray, timestamp: np.ndarray,
                    hits_per_readout: np.ndarray, *, leading_idle: int = 2,
                    idle_between: int | np.ndarray = 0, trailing_idle: int = 4) -> np.ndarray:
    """The bytes of readout records (``FE DC BA`` header + payload) holding ``raw`` hits,
    for either chip generation.

    ``raw`` is the ``(n, hit size)`` array of raw hits from an ``encode_hits``
    (:func:`._apx_hits.encode_hits`: 8 bytes, AstroPix 4; :func:`._apx3_hits.encode_hits`:
    5 bytes, AstroPix 3). Readout ``i`` (``readout_id[i]``, ``timestamp[i]``) holds the
    next ``hits_per_readout[i]`` rows of ``raw``, with ``leading_idle`` idle bytes
    (``0xBC``) before its first hit, ``idle_between`` after every hit but its last (an int
    or one value per hit) and ``trailing_idle`` at its end. A readout of zero hits is
    ``leading_idle + trailing_idle`` idle bytes, which the decoder flags as a failure (as
    upstream fails on it).

    ``trailing_idle`` must be ≥ 1: the decoder treats a hit that ends exactly at the end
    of a payload as cut (the upstream ``c + 8 >= n`` / ``c + 5 >= n`` rules) and keeps it
    only as extra bytes for the next readout. Vectorised: no loop per hit or per readout.
    """
    if leading_idle < 0 or trailing_idle < 1:
        raise ValueError("leading_idle must be >= 0 and trailing_idle >= 1 (a hit that ends "
                         "a payload is read as cut)")
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.ndim != 2:
        raise ValueError(f"raw must be an (n, hit size) array of raw hits, not {raw.ndim}-d")
    hit_size = raw.shape[1]
    counts = np.asarray(hits_per_readout, dtype=np.int64)
    n, n_readouts = len(raw), len(counts)
    if (counts.size and counts.min() < 0) or int(counts.sum()) != n:
        raise ValueError("hits_per_readout must be >= 0 and sum to the number of hits")
    gaps = _idle_between(idle_between, n)
    ends = np.cumsum(counts)
    starts = ends - counts
    # idle bytes before each hit: leading_idle for the first of its readout, else the gap
    # after the previous hit
    before = np.empty(n, dtype=np.int64)
    before[1:] = gaps[: n - 1]
    before[starts[counts > 0]] = leading_idle
    step = before + hit_size
    cum = np.concatenate(([0], np.cumsum(step)))
    body = cum[ends] - cum[starts]  # leading idle + hits + gaps of each readout
    payload_len = np.where(counts > 0, body, leading_idle) + trailing_idle
    if payload_len.size and payload_len.max() > 0xFFFFFFFF:
        raise ValueError("a readout payload would exceed 4 GiB")
    record = READOUT_HEADER_SIZE + payload_len
    record_start = np.cumsum(record) - record
    out = np.full(int(record.sum()), IDLE_BYTE, dtype=np.uint8)
    head = np.empty(n_readouts, dtype=READOUT_DTYPE)
    head["marker"] = READOUT_MARKER
    head["readout_id"] = readout_id
    head["timestamp"] = timestamp
    head["length"] = payload_len
    out[record_start[:, None] + np.arange(READOUT_HEADER_SIZE)] = (
        head.view(np.uint8).reshape(-1, READOUT_HEADER_SIZE))
    readout_of_hit = np.repeat(np.arange(n_readouts), counts)
    hit_pos = (record_start[readout_of_hit] + READOUT_HEADER_SIZE
               + cum[1:] - cum[starts][readout_of_hit] - hit_size)
    out[hit_pos[:, None] + np.arange(hit_size)] = raw
    return out


def _integer_columns(table: pa.Table, wanted: Sequence[str],
                     stored_as: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """The ``wanted`` columns that exist, as integer arrays (``stored_as`` maps a wanted
    name to the column that holds it). Integer columns keep their type, so that
    :func:`~._apx_hits.encode_hits` names the hit of a negative or too large value;
    float columns (a pandas merge makes them) go through the writers' safe cast, so that
    whole numbers are written and a fraction, NaN or null is refused, naming the column."""
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        source = (stored_as or {}).get(name, name)
        if source not in table.column_names:
            continue
        kind = table.schema.field(source).type
        if pa.types.is_integer(kind):
            target = np.dtype(kind.to_pandas_dtype())
        elif pa.types.is_floating(kind):
            target = np.dtype(np.int64)
        else:
            raise ValueError(f"write_apx: column {source!r} must be integer, not {kind}")
        try:
            out[name] = column_values(table, source, target)
        except ValueError as exc:
            raise ValueError(f"write_apx: hit fields are integers: {exc}") from None
    # The readout header's fields, for both chip generations (the hits' bytes, which
    # each generation's encode_hits checks, hold neither): numpy would wrap a value
    # outside the field's range when the header is filled in.
    for name in ("readout_id", "timestamp"):
        field = READOUT_DTYPE[name]
        values = out[name]
        outside = (values < 0) | (values > np.iinfo(field).max)
        if outside.any():
            hit = int(np.argmax(outside))
            source = (stored_as or {}).get(name, name)
            raise ValueError(f"write_apx: column {source!r} holds {values[hit]} at hit {hit}, "
                             f"outside a readout's {field.name} field (0 to "
                             f"{np.iinfo(field).max})")
    return out


_APX3_WRITE = ("chip_id", "payload", "column", "location", "tot_msb", "tot_lsb", "tot_dec",
               "chip_timestamp")


def _apx3_hit_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """The AstroPix 3 hit columns the writer needs (``wall_timestamp`` read as
    ``timestamp``); the field checks are :func:`~._apx3_hits.encode_hits`'s."""
    names = table.column_names
    time_column = "wall_timestamp" if "wall_timestamp" in names else "timestamp"
    missing = [c for c in ("readout_id", *apx3.REQUIRED_WRITE_COLUMNS) if c not in names]
    if time_column not in names:
        missing.append("wall_timestamp (or timestamp)")
    if missing:
        raise ValueError(f"write_apx: missing AstroPix 3 hit column(s) {missing}")
    return _integer_columns(table, ["readout_id", "timestamp", *_APX3_WRITE],
                            stored_as={"timestamp": time_column})


def _hit_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """The AstroPix 4 hit columns the writer needs."""
    names = table.column_names
    missing = [c for c in _REQUIRED_WRITE if c not in names]
    for k in ("1", "2"):
        if f"ts_coarse{k}" in names and f"ts_fine{k}" in names:
            continue
        if f"ts_dec{k}" not in names:
            missing.append(f"ts_coarse{k}/ts_fine{k} (or ts_dec{k})")
    if missing:
        raise ValueError(f"write_apx: missing hit column(s) {missing}")
    return _integer_columns(table, (*_REQUIRED_WRITE, "payload", "ts_coarse1", "ts_fine1",
                                    "ts_coarse2", "ts_fine2", "ts_dec1", "ts_dec2"))
