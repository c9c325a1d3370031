"""FLIM LABS FCS correlation curves, ``FCS1`` (``read_fcs1``, ``write_fcs1``).

Layout (the format page in docs/, from the vendor's Rust writer ``fcs_export_data`` and
the published example export)::

    "FCS1" | u32 M | M bytes of metadata JSON | u32 D | D bytes of data JSON

The data JSON is ``{"g2_correlations": [[[ch1, ch2], [vec_0, vec_1, …]], …],
"lag_index": [...]}``: per channel pair, one G(τ) vector per acquisition (and, for
writers since August 2024, their mean first), each as long as ``lag_index``. The lags
are in *bins* of the intensity trace (whatever the vendor's prose says), so
``tau_us = lag_index × bin_width``. JSON ``null`` is a non-finite value (NaN).

Both blocks go through bindf's strict JSON parser (never ``eval``, as the vendor scripts
do), each declared length checked against the file size before anything is read. The
table is built with one Arrow conversion per pair (no loop per value).

Damage (``on_error``): the data JSON unusable as a whole (``bad_data_block``), a pair
entry that is not ``[[ch1, ch2], [vectors…]]`` (``bad_pair``), a vector that is not a
list of numbers as long as ``lag_index`` (``bad_vector``), bytes after the data block
(``trailing_bytes``). Offsets name the start of the block concerned (JSON text has no
record boundaries to point at more closely). A file whose metadata or data length runs
past its end is a truncation (the writer writes the file in five calls after computing
it): a :class:`~bindf.errors.TruncatedFileWarning` at that length field and an empty
table, without metadata when the metadata block is the cut one.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._atomic import atomic_output
from .._header import parse_json_header, positive_number, read_exact, read_preamble
from .._warnings import warn as _warn
from .._writing import (
    column_values,
    encode_preamble,
    inherited_header,
    require_columns,
    to_arrow_table,
)
from ..errors import (
    BindfWarning,
    CorruptDataError,
    CorruptDataWarning,
    FCS1LayoutWarning,
    HeaderError,
    TruncatedFileWarning,
    TruncatedHeaderError,
)
from ._base import FormatReader

FCS1_MAGIC = b"FCS1"
FORMAT_LABEL = "FLIM LABS FCS1"
_U32 = struct.Struct("<I")

SCHEMA = pa.schema([
    pa.field("pair_index", pa.int32(), nullable=False),
    pa.field("channel_1", pa.uint8(), nullable=False),
    pa.field("channel_2", pa.uint8(), nullable=False),
    pa.field("vector_index", pa.int32(), nullable=False),
    pa.field("is_mean", pa.bool_(), nullable=False),
    pa.field("acquisition", pa.int32()),
    pa.field("lag_index", pa.int64(), nullable=False),
    pa.field("tau_us", pa.float64()),
    pa.field("g2", pa.float64(), nullable=False),
])

#: Header keys the reader adds to the metadata JSON (the writer leaves them out).
ADDED_KEYS = ("notes_text", "channel_names", "layout")
LAYOUTS = ("mean_first", "no_mean", "unknown")


@dataclass
class _Pair:
    """One ``[[ch1, ch2], [vectors…]]`` entry that passed the structural checks."""

    position: int
    channels: tuple[int, int]
    vectors: list[Any]


def parse_notes(notes: Any) -> tuple[Any, dict[str, Any]]:
    """``(notes_text, channel_names)`` from the metadata's ``notes``: since 2026 the
    vendor stores ``{"notes": text, "channel_names": {"<ch>": name}}`` as JSON text;
    anything else is plain text (as the vendor's own reader falls back)."""
    if not isinstance(notes, str):
        return notes, {}
    try:
        parsed = parse_json_header(notes.encode("utf-8"))
    except HeaderError:
        return notes, {}
    names = parsed.get("channel_names")
    return parsed.get("notes", notes), dict(names) if isinstance(names, dict) else {}


def detect_layout(vector_counts: list[int], num_acquisitions: Any) -> str:
    """``"mean_first"`` when every pair has N+1 vectors, ``"no_mean"`` when N, else
    ``"unknown"`` (N = ``num_acquisitions``)."""
    n = num_acquisitions
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or not vector_counts:
        return "unknown"
    if all(k == n + 1 for k in vector_counts):
        return "mean_first"
    if all(k == n for k in vector_counts):
        return "no_mean"
    return "unknown"


class FCS1Reader(FormatReader):
    """FLIM LABS FCS correlation curves (``FCS1``): one row per channel pair × vector ×
    lag, in file order.

    Columns
    -------
    pair_index : int32
        Position of the pair in the file (the file's order does not follow the
        metadata's ``correlations``; key pairs by their channels).
    channel_1, channel_2 : uint8
        The correlated channels, 0-based.
    vector_index : int32
        Index of the vector in the pair's stored list.
    is_mean : bool
        The stored mean (vector 0 of files whose layout is ``"mean_first"``).
    acquisition : int32, null for the mean
        1-based index among the per-acquisition vectors. Not a time order: the writer
        stores them in completion order, which differs between pairs.
    lag_index : int64
        The stored lag, in bins of the intensity trace.
    tau_us : float64
        ``lag_index × bin_width`` (µs); null when the metadata has no positive
        ``bin_width``.
    g2 : float64
        G(τ); JSON null (a non-finite value) is NaN.

    The header is the metadata JSON plus ``notes_text`` and ``channel_names`` (parsed
    from ``notes``) and ``layout``: ``"mean_first"`` (N+1 vectors per pair, the first
    is their mean), ``"no_mean"`` (N vectors) or ``"unknown"`` (anything else, with an
    :class:`FCS1LayoutWarning`), where N is ``num_acquisitions``; ``None`` when the
    file holds no curves. Keys already in the metadata are not replaced.
    ``df.bindf.mean_curves()`` gives the mean curve of each pair (computed when the
    file stores none) and ``df.bindf.plot_correlation()`` plots G(τ).
    """

    name: ClassVar[str] = "fcs1"
    label: ClassVar[str] = FORMAT_LABEL
    # FLIM LABS writes an FCS1 file in one go, once the correlations are computed.
    written_whole: ClassVar[bool] = True

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        self.refuse_options(self.options)
        #: Warnings to give when the data is read (not at every open of the file).
        self._notices: list[BindfWarning] = []
        self._table = SCHEMA.empty_table()
        try:
            metadata, self.data_offset = read_preamble(
                f, magic=FCS1_MAGIC, file_size=self.source.size, path=self.path,
                format_label=FORMAT_LABEL)
        except TruncatedHeaderError as exc:
            # A length running past the end is a file still being written (the writer
            # writes it in five calls once the curves are computed): no metadata yet.
            self._truncated(exc.offset if exc.offset is not None else len(FCS1_MAGIC),
                            exc.reason)
            return {"notes_text": "", "channel_names": {}, "layout": None}
        pairs, lags = self._read_data(f)
        counts = [len(p.vectors) for p in pairs]
        layout = detect_layout(counts, metadata.get("num_acquisitions")) if pairs else None
        if layout == "unknown":
            self._notices.append(FCS1LayoutWarning(
                f"pairs have {sorted(set(counts))} vectors but num_acquisitions is "
                f"{metadata.get('num_acquisitions')!r} (expected N or N+1): cannot tell "
                "whether vector 0 is a stored mean; every vector is read as an acquisition",
                path=self.path, offset=self.data_offset + 4))
        if pairs:
            self._table = self._build(pairs, lags, metadata.get("bin_width"),
                                      layout == "mean_first")
        header = dict(metadata)
        notes_text, channel_names = parse_notes(metadata.get("notes", ""))
        header.setdefault("notes_text", notes_text)
        header.setdefault("channel_names", channel_names)
        header.setdefault("layout", layout)
        return header

    # -- the data block -------------------------------------------------------------------
    def _read_data(self, f: BinaryIO) -> tuple[list[_Pair], pa.Array | None]:
        """The structurally valid pairs and the lags (``[]``, None when there are none)."""
        pos = self.data_offset
        size = self.source.size
        length_field = read_exact(f, 4)
        if len(length_field) < 4:
            self._truncated(pos, "the file ends before the data block's length field"
                            if pos == size else "the file ends inside the data length field")
            return [], None
        (length,) = _U32.unpack(length_field)
        start = pos + 4
        if length > size - start:  # checked before anything is allocated
            self._truncated(pos, f"the data block declares {length} bytes but only "
                                 f"{size - start} follow")
            return [], None
        raw = read_exact(f, length)
        if len(raw) < length:  # the file shrank after it was measured
            self._truncated(pos, "the file shrank while it was read")
            return [], None
        trailing = size - start - length
        # JSON true/false parse as Python bools, which Arrow would turn into 1.0/0.0:
        # only a block holding such a literal needs the slower check of each vector.
        self._bool_literals = b"true" in raw or b"false" in raw
        try:
            data = parse_json_header(raw, path=self.path, offset=start)
        except HeaderError as exc:
            # Bytes after a block that is no JSON are one damage, not two: bytes inserted
            # into the text (or a length field too small) cut it short and leave its end
            # after it, so the block is what is named.
            after = f" ({trailing} bytes follow it: bytes inserted into the block or a " \
                    "damaged length field)" if trailing else ""
            self._damaged("bad_data_block", f"data block: {exc.reason}{after}",
                          exc.offset or start)
            return [], None
        if trailing:
            self._damaged("trailing_bytes", f"{trailing} bytes follow the data block "
                          "(nothing should)", start + length)
        lags, g2 = data.get("lag_index"), data.get("g2_correlations")
        if not isinstance(lags, list) or not isinstance(g2, list):
            self._damaged("bad_data_block", "the data block needs the lists 'lag_index' and "
                          "'g2_correlations'", start)
            return [], None
        try:  # inferred, not cast: a cast to int64 would truncate 1.5 silently
            lag_array = pa.array(lags)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            lag_array = None
        if lag_array is not None and pa.types.is_null(lag_array.type) and not lag_array:
            lag_array = pa.array([], pa.int64())
        if lag_array is None or lag_array.type != pa.int64() or lag_array.null_count:
            self._damaged("bad_data_block", "'lag_index' must be a list of integers "
                          "(without nulls)", start)
            return [], None
        pairs = []
        for position, entry in enumerate(g2):  # one step per channel pair, not per value
            problem = _pair_problem(entry)
            if problem:
                self._damaged("bad_pair", f"g2_correlations[{position}] {problem}", start)
                continue
            pairs.append(_Pair(position, (entry[0][0], entry[0][1]), entry[1]))
        return pairs, lag_array

    def _build(self, pairs: list[_Pair], lags: pa.Array, bin_width: Any,
               mean_first: bool) -> pa.Table:
        """The long table: one Arrow conversion per pair, the rest numpy."""
        n_lags = len(lags)
        blocks = []
        for pair in pairs:
            matrix, kept = self._pair_matrix(pair, n_lags)
            if len(kept):
                blocks.append((pair, matrix, kept))
        if not blocks:
            return SCHEMA.empty_table()
        vectors = np.concatenate([kept for _, _, kept in blocks])
        per_pair = np.array([len(kept) for _, _, kept in blocks])
        rows_per_pair = per_pair * n_lags
        g2 = np.concatenate([matrix.ravel() for _, matrix, _ in blocks])
        vector_index = np.repeat(vectors, n_lags).astype(np.int32)
        is_mean = (vector_index == 0) & mean_first
        acquisition = vector_index + (0 if mean_first else 1)
        lag_values = np.tile(lags.to_numpy(zero_copy_only=False), len(vectors))
        width = positive_number(bin_width)
        if width is not None:
            with np.errstate(over="ignore"):  # a τ beyond float64 is null, as below
                tau_values = lag_values * width
            beyond = ~np.isfinite(tau_values)
            tau = pa.array(tau_values, mask=beyond if beyond.any() else None)
        else:
            tau = pa.nulls(len(lag_values), pa.float64())
        columns = {
            "pair_index": np.repeat([p.position for p, _, _ in blocks], rows_per_pair),
            "channel_1": np.repeat([p.channels[0] for p, _, _ in blocks], rows_per_pair),
            "channel_2": np.repeat([p.channels[1] for p, _, _ in blocks], rows_per_pair),
            "vector_index": vector_index,
            "is_mean": is_mean,
            "acquisition": pa.array(acquisition, mask=is_mean, type=pa.int32()),
            "lag_index": lag_values,
            "tau_us": tau,
            "g2": g2,
        }
        arrays = [columns[f.name] if isinstance(columns[f.name], pa.Array)
                  else pa.array(np.asarray(columns[f.name]).astype(f.type.to_pandas_dtype()))
                  for f in SCHEMA]
        return pa.Table.from_arrays(arrays, schema=SCHEMA)

    def _pair_matrix(self, pair: _Pair, n_lags: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair's vectors as an (n_kept, n_lags) float64 matrix (null → NaN) and the
        indices of the vectors kept (damaged ones dropped under warn/skip)."""
        where = self.data_offset + 4
        try:
            arrays = pa.array(pair.vectors, type=pa.list_(pa.float64()))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            arrays = None
        bools = self._bool_literals and _holds_bool(pair.vectors)
        if arrays is None or arrays.null_count or bools:  # find the bad vectors (one step each)
            good, kept = [], []
            for k, vector in enumerate(pair.vectors):
                values = (_doubles(vector) if isinstance(vector, list)
                          and not (bools and _holds_bool(vector)) else None)
                if values is not None:
                    good.append(k)
                    kept.append(values)
                else:
                    self._damaged("bad_vector", f"pair {pair.channels} vector {k} is not a "
                                  "list of numbers", where)
            offsets = np.zeros(len(kept) + 1, dtype=np.int32)
            np.cumsum([len(values) for values in kept], out=offsets[1:])
            arrays = pa.ListArray.from_arrays(
                pa.array(offsets), pa.concat_arrays(kept) if kept else pa.array([], pa.float64()))
            index = np.array(good, dtype=np.int64)
        else:
            index = np.arange(len(arrays), dtype=np.int64)
        lengths = pc.list_value_length(arrays).to_numpy(zero_copy_only=False)
        wrong = lengths != n_lags
        for k in index[wrong]:
            self._damaged("bad_vector", f"pair {pair.channels} vector {k} has "
                          f"{lengths[index == k][0]} values but lag_index has {n_lags}", where)
        if wrong.any():
            arrays = arrays.filter(pa.array(~wrong))
            index = index[~wrong]
        values = arrays.flatten().fill_null(float("nan")).to_numpy(zero_copy_only=False)
        return values.reshape(len(index), n_lags), index

    # -- damage -----------------------------------------------------------------------------
    def _damaged(self, kind: str, message: str, offset: int) -> None:
        if self.on_error == "raise":
            raise CorruptDataError(f"{FORMAT_LABEL}: {message}", path=self.path, offset=offset)
        self.note_error(kind)
        if self.on_error == "warn":
            self._notices.append(CorruptDataWarning(
                f"{FORMAT_LABEL}: {message}; dropped", path=self.path, offset=offset))

    def _truncated(self, offset: int, why: str) -> None:
        self._notices.append(TruncatedFileWarning(
            f"truncated {FORMAT_LABEL} file: {why} (possibly still being written); "
            "returning no curves", path=self.path, offset=offset))

    # -- the reader contract ----------------------------------------------------------------
    @property
    def schema(self) -> pa.Schema:
        return SCHEMA

    def count_rows(self) -> int:
        return self._table.num_rows

    def _batches(self, columns: list[str], batch_size: int,
                 n_rows: int | None) -> Iterator[pa.RecordBatch]:
        for notice in self._notices:
            _warn(notice)
        table = self._table.select(columns)
        yield from table.to_batches(max_chunksize=batch_size)


def _doubles(vector: list[Any]) -> pa.Array | None:
    """One G(τ) vector as float64 values (null where JSON has ``null``), or None when it
    is not a list of numbers. An integer beyond 2⁵³, which pyarrow refuses to round, is
    rounded to the nearest double, as Python's ``float`` and a JSON reader into numpy
    give it (one Python step per value, only for such a vector); one beyond the double
    range is no number."""
    try:
        return pa.array(vector, type=pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        pass
    if not all(v is None or type(v) in (int, float) for v in vector):
        return None
    try:
        return pa.array([None if v is None else float(v) for v in vector], type=pa.float64())
    except OverflowError:
        return None


def _holds_bool(value: Any) -> bool:
    """Whether the parsed JSON ``value`` holds a ``true``/``false`` anywhere (JSON
    booleans are not numbers; Arrow would read them as 1.0/0.0). One C-level
    re-encoding, no Python step per value."""
    text = json.dumps(value)
    return "true" in text or "false" in text


def _pair_problem(entry: Any) -> str | None:
    """Why ``entry`` is not ``[[ch1, ch2], [vectors…]]`` with channels 0..255, or None."""
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list)
            and isinstance(entry[1], list)):
        return "is not [[ch1, ch2], [vectors...]]"
    channels = entry[0]
    if len(channels) != 2 or any(isinstance(c, bool) or not isinstance(c, int)
                                 or not 0 <= c <= 255 for c in channels):
        return f"has channels {channels!r}, not two channel numbers 0..255"
    return None


def sample() -> bytes:
    """A small valid file for the robustness and fuzz sweeps: 2 pairs × (mean + 2
    acquisitions) × 6 lags (no null: the sweeps compare tables, and NaN != NaN)."""
    lags = [0, 3, 9, 27, 81, 243]
    curves = []
    for pair_number, pair in enumerate(([0, 1], [1, 1])):
        acquisitions = [[round(0.01 / (1 + lag) + 0.001 * (pair_number + a), 6) for lag in lags]
                        for a in range(2)]
        mean = [(x + y) / 2 for x, y in zip(*acquisitions)]
        curves.append([pair, [mean, *acquisitions]])
    metadata = {"acquisition_time": 1000, "bin_width": 10, "correlations": [[0, 1], [1, 1]],
                "enabled_channels": [0, 1], "notes": "", "num_acquisitions": 2}
    return _encode(metadata, {"g2_correlations": curves, "lag_index": lags})


def _encode(metadata: Mapping[str, Any], data: Mapping[str, Any]) -> bytes:
    block = json.dumps(dict(data), allow_nan=False, separators=(",", ":")).encode("utf-8")
    return encode_preamble(FCS1_MAGIC, metadata) + _U32.pack(len(block)) + block


#: The columns ``write_fcs1`` reads, and the type each is safely cast to.
_WRITTEN_COLUMNS = {"pair_index": np.int64, "channel_1": np.uint8, "channel_2": np.uint8,
                    "vector_index": np.int64, "lag_index": np.int64, "g2": np.float64}


def write_fcs1(
    path: str | os.PathLike[str],
    frame: Any,
    header: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write correlation curves as an ``FCS1`` file, atomically.

    Parameters
    ----------
    frame:
        A long table as ``read_fcs1`` returns it: ``pair_index``, ``channel_1``,
        ``channel_2``, ``vector_index``, ``lag_index`` and ``g2``, every vector of every
        pair holding the same lags in the same order. Pairs and vectors are written in
        ``pair_index`` / ``vector_index`` order (rows sorted by them, then by position).
        Values are cast safely, as by every writer: channels must be integers 0..255,
        the same on every row of a pair; indices and lags integers; ``g2`` numbers, where
        NaN, infinities and nulls are written as JSON null, as the vendor's writer does.
        A value that does not fit is a ``ValueError`` naming its column. An empty frame
        gives a file without curves.
    header:
        The metadata JSON. When omitted, the header a bindf reader attached to
        ``frame`` is used, minus the keys the reader adds (``notes_text``,
        ``channel_names``, ``layout``); else ``{}``.
    overwrite:
        ``False`` refuses to replace an existing file.
    """
    table = to_arrow_table(frame)
    require_columns(table, _WRITTEN_COLUMNS, "FCS1 curves")
    explicit = header is not None
    metadata = inherited_header(frame, header) or {}
    if not explicit:
        metadata = {k: v for k, v in metadata.items() if k not in ADDED_KEYS}
    columns = {name: column_values(table, name, dtype, null_as_nan=name == "g2")
               for name, dtype in _WRITTEN_COLUMNS.items()}
    curves, lags = _curves(columns) if table.num_rows else ([], [])
    data = _encode(metadata, {"g2_correlations": curves, "lag_index": lags})
    with atomic_output(path, overwrite=overwrite) as f:
        f.write(data)


def _curves(columns: dict[str, np.ndarray]) -> tuple[list[Any], list[int]]:
    """The ``g2_correlations`` and ``lag_index`` lists of the data block, from the
    writer's columns (at least one row), checked to make a file the reader accepts."""
    order = np.lexsort((columns["vector_index"], columns["pair_index"]))  # stable
    columns = {name: values[order] for name, values in columns.items()}
    pairs = columns["pair_index"]
    pair_starts = np.flatnonzero(np.r_[True, pairs[1:] != pairs[:-1]])
    pair_rows = np.diff(np.r_[pair_starts, len(pairs)])
    for name in ("channel_1", "channel_2"):  # the file stores a pair's channels once
        channel = columns[name]
        expected = np.repeat(channel[pair_starts], pair_rows)
        stray = np.flatnonzero(channel != expected)
        if stray.size:
            row = int(stray[0])
            raise ValueError(f"cannot write FCS1: column {name!r} holds {expected[row]} and "
                             f"{channel[row]} for pair_index {pairs[row]} (row {order[row]}); "
                             "the rows of a pair must agree on its channels")
    key = np.stack([pairs, columns["vector_index"]])
    starts = np.flatnonzero(np.r_[True, (key[:, 1:] != key[:, :-1]).any(axis=0)])
    lengths = np.diff(np.r_[starts, len(pairs)])
    if (lengths != lengths[0]).any():
        raise ValueError("cannot write FCS1: vectors have different numbers of lags")
    n_lags = int(lengths[0])
    lag_matrix = columns["lag_index"].reshape(-1, n_lags)
    if (lag_matrix != lag_matrix[0]).any():
        raise ValueError("cannot write FCS1: vectors have different lag_index values")
    g2 = columns["g2"].astype(object)
    g2[~np.isfinite(columns["g2"])] = None  # strict JSON has no NaN or infinity
    vector_values = g2.reshape(-1, n_lags).tolist()
    vector_bounds = np.searchsorted(starts, np.r_[pair_starts, len(pairs)])
    curves = [[[int(columns["channel_1"][row]), int(columns["channel_2"][row])],
               vector_values[first:last]]
              for row, first, last in zip(pair_starts, vector_bounds[:-1],
                                          vector_bounds[1:])]  # one step per pair
    return curves, lag_matrix[0].tolist()
