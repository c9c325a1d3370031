"""IT02 layout knowledge shared by the reader and the writer: constants, channel
naming, layout detection (dense vs sparse) and the sparse end-marker check.

See :mod:`bindf.formats.it02` for the format description.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._kernels import _it02

IT02_MAGIC = b"IT02"
FORMAT_LABEL = "IT02 intensity tracing"
LAYOUTS = ("dense", "sparse")

TIME_BYTES = 8
COUNT_BYTES = 4
#: Sparse: bytes before the counts (f64 time + u8 mask).
SPARSE_FIXED_BYTES = _it02.SPARSE_FIXED_BYTES
#: Sparse masks are one byte, so a sparse file has at most 8 channels.
MAX_SPARSE_CHANNELS = _it02.MAX_SPARSE_CHANNELS
MAX_SPARSE_RECORD = SPARSE_FIXED_BYTES + COUNT_BYTES * MAX_SPARSE_CHANNELS

#: Header keys bindf adds to the file's JSON (only when the JSON lacks them). The writer
#: drops them again, so a read → write → read round trip does not freeze stale values.
DERIVED_KEYS = ("layout", "acquisition_end_ns")

#: Layout detection looks at this many leading records (within LAYOUT_PROBE_BYTES).
PROBE_RECORDS = 64
LAYOUT_PROBE_BYTES = 64 << 10
#: End-marker check: how many records before the candidate marker must chain onto it.
#: Measured on 634k truncations of random sparse data (counts chosen to look like
#: doubles): depth 4 accepted 441 false markers, 8 accepted 5, 16 none.
MARKER_CHECK_DEPTH = 16
#: Bytes at the end of the file the end-marker check may look at.
MARKER_TAIL_BYTES = (MARKER_CHECK_DEPTH + 1) * MAX_SPARSE_RECORD
#: Detection: no acquisition lasts longer than this (~31 years). Rejects garbage doubles.
MAX_PLAUSIBLE_TIME_NS = 1e18
#: Detection: a sparse chain broken by an invalid mask still counts as sparse evidence
#: when at least this many records come before the bad one (the read then reports the
#: damage, per ``on_error``). Bytes that are not sparse do not chain that far: read as
#: sparse, the real dense example and ~900k dense record sets (1-7 channels, counts from
#: all-zero to random u32) never gave more than 2 records with plausible times, 300k
#: random buffers never more than 3. 8 leaves a wide margin and still lets a sparse file
#: damaged close to its start be detected.
MIN_RECORDS_BEFORE_BAD_MASK = 8

#: Why a layout's reading of the leading bytes finds nothing to judge.
NO_COMPLETE_RECORD = "no complete record"

_F64 = struct.Struct("<d")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def dense_dtype(n_channels: int) -> np.dtype:
    """One dense record: ``time_ns`` then ``c0 … c{N-1}`` (channel *positions*), packed."""
    return np.dtype([("time_ns", "<f8")] + [(f"c{k}", "<u4") for k in range(n_channels)])


def channel_column(channel: int) -> str:
    """Column name of 0-based channel index ``channel``: the vendor shows it as ``i + 1``."""
    return f"ch{channel + 1}"


def _channels_problem(header: dict[str, Any]) -> str | None:
    """Why ``header["channels"]`` is unusable, or None. Shared by reader and writer."""
    channels = header.get("channels")
    if not isinstance(channels, list):
        return "'channels' must be a list of channel indices"
    if not channels:
        return "'channels' is empty: the file enables no channel"
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in channels):
        return f"'channels' must hold non-negative integers, not {channels!r}"
    if len(set(channels)) != len(channels):
        return f"'channels' lists a channel twice: {channels!r}"
    return None


def _bin_width_ns(header: dict[str, Any]) -> float | None:
    """``bin_width_micros`` in ns, or None when absent or not a positive finite number."""
    value = header.get("bin_width_micros")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        ns = float(value) * 1000.0
    except OverflowError:  # a JSON integer beyond float range
        return None
    return ns if math.isfinite(ns) and ns > 0 else None


# -- layout detection -------------------------------------------------------------------


def _implausible_times(times: np.ndarray, bin_ns: float | None) -> str | None:
    """Why these leading record times cannot be an intensity trace, or None.

    Bins are distinct and in order: times must be finite, within [0, 1e18] ns and
    increase by at least half a bin (any amount if the bin width is unknown). Doubles
    read from misaligned bytes almost never pass this.
    """
    if len(times) == 0:
        return NO_COMPLETE_RECORD
    with np.errstate(invalid="ignore"):
        if not np.isfinite(times).all():
            return "a time is not finite"
        if not ((times >= 0) & (times <= MAX_PLAUSIBLE_TIME_NS)).all():
            return "a time is negative or absurdly large"
        step = np.diff(times)
        if bin_ns is None:
            if not (step > 0).all():
                return "times do not increase"
        elif not (step >= 0.5 * bin_ns).all():
            return "times do not advance by at least half a bin"
    return None


@dataclass
class _Evidence:
    """What the leading bytes say about one layout."""

    #: Reason the layout is impossible (bad sparse mask), or None.
    impossible: str | None
    #: Reason the times look wrong, or None when they are plausible.
    implausible: str | None
    #: The data section ends exactly where this layout says it should.
    clean_end: bool
    #: Damage that ends the record chain late enough for the records before it to still
    #: count as evidence (see :data:`MIN_RECORDS_BEFORE_BAD_MASK`), or None.
    damage: str | None = None
    #: The times were put to the spacing test: two bins or more, or a bin that a
    #: verified end marker closes. One lone time tests nothing but its range.
    tested: bool = True


def _dense_evidence(head: bytes, data_bytes: int, n_channels: int, bin_ns: float | None
                    ) -> _Evidence:
    dtype = dense_dtype(n_channels)
    n = min(len(head) // dtype.itemsize, PROBE_RECORDS)
    times = np.frombuffer(head, dtype=dtype, count=n)["time_ns"]
    return _Evidence(None, _implausible_times(times, bin_ns), data_bytes % dtype.itemsize == 0,
                     tested=n >= 2)


def _sparse_evidence(head: bytes, data_bytes: int, n_channels: int, bin_ns: float | None,
                     marker_found: bool) -> _Evidence:
    if n_channels > MAX_SPARSE_CHANNELS:
        return _Evidence(f"{n_channels} channels do not fit a one-byte mask", None, False)
    whole = len(head) == data_bytes
    rows, pos, status = _it02.scan_sparse(head, 0, n_channels, len(head) if whole else PROBE_RECORDS)
    damage = None
    if status == _it02.STATUS_BAD_MASK:
        damage = f"the record at data byte {pos} has an invalid mask 0x{head[pos + 8]:02x}"
        if rows < MIN_RECORDS_BEFORE_BAD_MASK:
            return _Evidence(f"{damage} after only {rows} record(s)", None, False)
    n = min(rows, PROBE_RECORDS)
    times = np.empty(n, dtype=np.float64)
    _it02.decode_sparse(head, 0, n_channels, n, times, [],
                        np.full(n_channels, -1, np.int8), True)
    if damage is not None:
        # The chain cannot reach the end of the data, so it never ends cleanly.
        return _Evidence(None, _implausible_times(times, bin_ns), False, damage)
    clean = (pos == len(head)) if whole else marker_found
    tested = n >= 2 or marker_found
    if clean and whole and 1 < rows == n:
        _, last, _ = _it02.scan_sparse(head, 0, n_channels, rows - 1)
        if head[last + 8] == 0:
            # The chain ends with a mask-0 record: the end marker, whose time may equal
            # the last bin's. It is not a bin, so it takes no part in the spacing test;
            # a marker at or after the bins before it is the test they pass.
            times, tested = times[:-1], bool(times[-1] >= times[-2])
    return _Evidence(None, _implausible_times(times, bin_ns), clean, tested=tested)


def detect_layout(head: bytes, data_bytes: int, n_channels: int, bin_ns: float | None,
                  marker_found: bool) -> str | tuple[None, str] | None:
    """Decide dense vs sparse from the first bytes after the header.

    ``head`` is the start of the data section (all of it if ``data_bytes <= len(head)``),
    ``marker_found`` whether the file ends in a verified sparse end marker. Returns the
    layout; ``None`` when the data holds no complete record in either layout that its
    bytes allow (a file cut inside its first record, or one whose first record is still
    being written): either way it has no row yet, and a read gives none with a truncation
    warning; or ``(None, explanation)`` when the bytes fit neither or both equally well.

    Rules, in order: an empty data section is dense (zero rows either way); data too short
    for a first record is undecided (above), or dense if its ninth byte is no sparse mask
    for ``n_channels``; a layout
    whose leading times are plausible (see :func:`_implausible_times`) wins over one whose
    are not; between plausible ones, times that passed the spacing test (two or more, or a
    bin closed by a verified end marker) win over a single record; when both readings
    are plausible single records nothing decides (a sparse file cut inside its second
    record ends cleanly as one dense record of garbage counts); otherwise a tie is
    broken by which layout makes the data section end cleanly (dense:
    a whole number of records; sparse: the chain ends exactly at the end of the file, or
    the file ends with a verified end marker). The real dense example is decided at the
    first step: read as sparse, its first mask is 0x7b, invalid for 3 channels.

    An invalid sparse mask rules the sparse layout out only when fewer than
    :data:`MIN_RECORDS_BEFORE_BAD_MASK` records come before it. After that many, the
    sparse reading is ranked like any other (by its times, up to the bad record) but never
    ends cleanly: it wins over dense times that are implausible, so a damaged sparse file
    reads as sparse and the damage is reported per ``on_error``, and it can never beat
    plausible dense times (a tie with them raises).
    """
    if data_bytes == 0:
        return "dense"
    dense = _dense_evidence(head, data_bytes, n_channels, bin_ns)
    sparse = _sparse_evidence(head, data_bytes, n_channels, bin_ns, marker_found)
    if dense.implausible == NO_COMPLETE_RECORD and (
            sparse.impossible or sparse.implausible == NO_COMPLETE_RECORD):
        return "dense" if sparse.impossible else None
    ranked = {
        name: (ev.implausible is None, ev.implausible is None and ev.tested, ev.clean_end)
        for name, ev in (("dense", dense), ("sparse", sparse))
        if ev.impossible is None
    }
    best = max(ranked.values())
    winners = [name for name, score in ranked.items() if score == best]
    plausible = [name for name, ev in (("dense", dense), ("sparse", sparse))
                 if ev.impossible is None and ev.implausible is None]
    if len(winners) == 1 and (best[0] or best[2]) and (
            len(plausible) < 2 or dense.tested or sparse.tested):
        return winners[0]
    why = "; ".join(
        f"as {name}: {ev.impossible or ev.implausible or 'plausible'}"
        + ("" if ev.impossible or ev.implausible or ev.tested else " (one record)")
        + ("" if ev.impossible
           else f", then {ev.damage}" if ev.damage
           else f", {'ends' if ev.clean_end else 'does not end'} cleanly")
        for name, ev in (("dense", dense), ("sparse", sparse))
    )
    return (None, why)


# -- end marker -------------------------------------------------------------------------


def _find_end_marker(tail: bytes, tail_start: int, data_offset: int, n_channels: int,
                     t_first: float) -> float | None:
    """Time of the sparse end marker if the file's last 9 bytes are one, else None.

    The chain cannot be walked backwards, so the candidate (``f64`` time then a zero
    mask byte, at ``size - 9``) is accepted only if its time is finite and not before the
    first record, and :data:`MARKER_CHECK_DEPTH` earlier records (or all of them, back to
    the start of the data) chain onto it: a record of ``k`` counts ending exactly there,
    whose mask has ``k`` bits, all valid, and whose time is finite, not before the first
    record's and not after the time of the record (or marker) it chains onto. Why the
    times: photon counts are small integers full of zero bytes, and without them the
    tail of a file cut inside a record could pass for a marker about once in 15,000 cuts
    (bytes of counts read as the "times" of misframed records are tiny or huge).

    This is a guess from the last bytes (headers, ``read_headers`` and ``follow`` need no
    more); a whole read walks the chain from the start and settles it: a chain that runs
    into the guessed marker is reported as corrupt, and one that ends exactly on the
    file's last 9 bytes with a mask-0 record finds the marker the guess missed.
    """
    end = tail_start + len(tail)
    marker = end - SPARSE_FIXED_BYTES
    if marker < data_offset or n_channels > MAX_SPARSE_CHANNELS or tail[-1] != 0:
        return None
    (t_end,) = _F64.unpack_from(tail, marker - tail_start)
    if not math.isfinite(t_end) or (marker > data_offset and not t_end >= t_first):
        return None

    seen: dict[tuple[int, int], bool] = {}

    def chains_back(record_end: int, depth: int) -> bool:
        # Memoised: crafted bytes could otherwise make the search branch (N+1)**depth ways.
        key = (record_end, depth)
        if key not in seen:
            seen[key] = _chains_back(record_end, depth)
        return seen[key]

    def _chains_back(record_end: int, depth: int) -> bool:
        if record_end == data_offset or depth == 0:
            return True
        (t_later,) = _F64.unpack_from(tail, record_end - tail_start)
        for k in range(n_channels + 1):
            start = record_end - SPARSE_FIXED_BYTES - COUNT_BYTES * k
            if start < max(data_offset, tail_start):
                break
            mask = tail[start - tail_start + 8]
            if mask >> n_channels or _POPCOUNT[mask] != k:
                continue
            (t,) = _F64.unpack_from(tail, start - tail_start)
            if t_first <= t <= t_later and chains_back(start, depth - 1):
                return True
        return False

    return t_end if chains_back(marker, MARKER_CHECK_DEPTH) else None
