"""Legacy AstroPix text logs (``.log``, ``read_apx_log``) and their conversion to ``.apx``.

Layout: ``docs/formats/apx-log.md``. Older DAQ versions saved runs as text: metadata
lines first — ``Name: {python dict}`` lines and one ``Namespace(...)`` line (the DAQ's
command-line options) — then one readout per line, ``<readout_id>\\t b'<hex payload>'``.
The payloads are decoded exactly like ``.apx`` payloads (same kernel, same carry of a
cut hit's bytes from one readout to the next), so the hit table has the same 18 columns.

Decisions:

* Metadata values are parsed with :func:`ast.literal_eval` (never ``eval``). The
  ``Namespace(...)`` line becomes a dict of its keyword arguments under ``"Namespace"``;
  every ``Name: {...}`` line becomes ``header["Name"]``. Python values that JSON cannot
  hold are converted: tuples → lists, sets → sorted lists, bytes → hex text, anything
  else → its ``repr``. Text lines that are neither are kept, in order, under
  ``header["comments"]``. ``readout_uid`` is taken from the ``Namespace`` line's
  ``chipVer`` (3 → 3000, AstroPix 3; 4 → 4000, AstroPix 4; absent → 4000) unless present;
  AstroPix 3 logs are decoded with the AstroPix 3 hit kernel and give its columns
  (``stitch=`` as for ``read_apx``).
* Logs carry no per-readout timestamp: the ``timestamp`` (AstroPix 3:
  ``wall_timestamp``) column is 0.
* A malformed data line is a :class:`~bindf.errors.CorruptDataError` naming the line
  number and byte offset (``on_error="warn"``/``"skip"`` drop the line, reset the carried
  bytes, and count ``bad_log_line``). A malformed metadata line is a
  :class:`~bindf.errors.HeaderError` with the line number.
* ``level="readouts"`` gives the readout table of ``.apx`` files; ``byte_offset`` is the
  offset of the readout's line in the text file.

Lines are matched in bulk with one regular expression per chunk of text and the hex is
decoded with one ``binascii.unhexlify`` call per chunk: no Python loop per readout.
"""

from __future__ import annotations

import ast
import binascii
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._source import Source
from ..errors import CorruptDataError, HeaderError
from ._apx3_hits import log_readout_uid
from ._apx_hits import STATUS_FLAGS, Decoded
from ._base import FormatReader
from ._stream import BatchStream, StreamDecoder, decode_file
from .apx import (
    HIT_SCHEMAS,
    MAGIC,
    READOUT_SCHEMAS,
    SUPPORTED_READOUTS,
    new_hit_columns,
    new_hit_decoder,
    resolve_stitch,
)

#: One readout line: id, TAB, optional blanks, b'hex'. Anything else after the header
#: is a malformed line.
DATA_LINE = re.compile(rb"^(\d+)\t[ ]*b'([0-9a-fA-F]*)'[ \t]*\r?$", re.MULTILINE)
_FIRST_DATA_LINE = re.compile(rb"^\d+\t", re.MULTILINE)
_METADATA_LINE = re.compile(r"^([A-Za-z_][\w .-]*):\s*(\{.*\})\s*$")
#: Bytes of text decoded per step (whole lines; a longer line is still read whole).
CHUNK_BYTES = 4 << 20
#: The metadata block is small; refuse to treat megabytes of text as a header.
MAX_HEADER_BYTES = 16 << 20


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else repr(value)
    return repr(value)


def parse_namespace(text: str) -> dict[str, Any]:
    """``Namespace(a=1, b='x')`` → ``{"a": 1, "b": "x"}`` with literal values only."""
    node = ast.parse(text.strip(), mode="eval").body
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "Namespace" and not node.args):
        raise ValueError("not a Namespace(...) call with keyword arguments")
    return {kw.arg: _jsonable(ast.literal_eval(kw.value)) for kw in node.keywords
            if kw.arg is not None}


class ApxLogReader(FormatReader):
    """Legacy AstroPix text log: the same hit (or readout) table as ``read_apx``.

    Options: ``level="hits"|"readouts"`` as for ``read_apx``. See the module docstring for
    how metadata lines become the header.
    """

    name: ClassVar[str] = "apx_log"
    label: ClassVar[str] = "AstroPix text log"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        self.level = self.options.pop("level", "hits")
        stitch = self.options.pop("stitch", None)
        if self.level not in ("hits", "readouts"):
            raise ValueError(f"level must be 'hits' or 'readouts', not {self.level!r}")
        if self.options:
            raise TypeError(f"unexpected option(s) for read_apx_log: {sorted(self.options)}")
        head = f.read(min(self.source.size, MAX_HEADER_BYTES))
        first = _FIRST_DATA_LINE.search(head)
        self.data_offset = first.start() if first else len(head)
        header: dict[str, Any] = {}
        comments: list[str] = []
        offset = 0
        namespace_offset = 0
        for number, raw in enumerate(head[: self.data_offset].splitlines(keepends=True), 1):
            line = raw.decode("utf-8", "replace").strip()
            try:
                if not line:
                    pass
                elif line.startswith("Namespace("):
                    header["Namespace"] = parse_namespace(line)
                    namespace_offset = offset
                elif match := _METADATA_LINE.match(line):
                    value = ast.literal_eval(match.group(2))
                    header[match.group(1).strip()] = _jsonable(value)
                else:
                    comments.append(line)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                raise HeaderError(f"metadata line {number} is not a Python literal: {exc}",
                                  path=self.path, offset=offset) from None
            offset += len(raw)
        if comments:
            header["comments"] = comments
        uid = header["readout_uid"] = log_readout_uid(header, path=self.path,
                                                      offset=namespace_offset)
        if uid not in SUPPORTED_READOUTS:
            raise HeaderError(f"readout_uid {uid!r} is not supported", path=self.path, offset=0)
        self.readout_uid: int = uid
        self.stitch = resolve_stitch(uid, stitch)
        self.header_lines = head[: self.data_offset].count(b"\n")
        return header

    @property
    def schema(self) -> pa.Schema:
        schemas = HIT_SCHEMAS if self.level == "hits" else READOUT_SCHEMAS
        return schemas[self.readout_uid]

    def iter_readouts(self) -> Iterator[ReadoutRun]:
        """Yield ``(payload_bytes, payload_pos, readout_id, line_offset, after_gap)`` per run
        of consecutive readout lines (payloads concatenated in ``payload_bytes``).

        A chunk of whole lines is one run unless damaged lines were dropped from it
        (``on_error="warn"/"skip"``): then it is cut there, and ``after_gap`` says that the
        run does not continue the previous one in the chip's byte stream.
        """
        stream = self.stream()
        try:
            yield from decode_file(self.source, stream, first_read=CHUNK_BYTES,
                                   max_read=CHUNK_BYTES)
        finally:
            for kind, count in stream.errors.items():
                self.note_error(kind, count)

    def stream(self, data_end: int | None = -1) -> ApxLogStream:
        """A resumable decoder of this log's readout lines, at the first one
        (``data_end=None`` for a file that is still growing)."""
        return ApxLogStream(self.data_offset, path=self.path, on_error=self.on_error,
                            data_end=self.source.size if data_end == -1 else data_end,
                            first_line=self.header_lines)

    def batch_stream(self, columns: Sequence[str] | None = None, *,
                     data_end: int | None = None) -> BatchStream:
        names = self.resolve_columns(columns)
        schema = pa.schema([self.schema.field(c) for c in names])
        stream = ApxLogHitStream(self.data_offset, path=self.path, on_error=self.on_error,
                                 data_end=data_end, first_line=self.header_lines,
                                 hits=new_hit_decoder(self.readout_uid, stitch=self.stitch,
                                                      store_hits=self.level == "hits"))
        hit_columns = new_hit_columns(self.readout_uid)

        def to_batch(unit: tuple[ReadoutRun, Decoded]) -> pa.RecordBatch:
            (payload, pos, readout_id, line_offset, _), decoded = unit
            if self.level == "hits":
                arrays = hit_columns(decoded, names)
            else:
                lengths = np.diff(np.append(pos, len(payload))).astype(np.uint32)
                arrays = _readout_arrays(names, readout_id, np.zeros(len(pos), np.uint64),
                                         lengths, decoded, line_offset)
            return pa.RecordBatch.from_arrays([pa.array(a) for a in arrays], schema=schema)

        return BatchStream(stream, to_batch)

    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([self.schema.field(c) for c in columns])
        decoder = new_hit_decoder(self.readout_uid, stitch=self.stitch,
                                  store_hits=self.level == "hits")
        hit_columns = new_hit_columns(self.readout_uid)
        produced = 0
        for payload, pos, readout_id, line_offset, after_gap in self.iter_readouts():
            if after_gap:
                decoder.reset()  # the byte stream is not continuous across dropped lines
            lengths = np.diff(np.append(pos, len(payload))).astype(np.uint32)
            timestamp = np.zeros(len(pos), dtype=np.uint64)
            decoded = decoder.decode(payload, pos, lengths, readout_id, timestamp)
            if self.level == "hits":
                arrays = hit_columns(decoded, columns)
            else:
                arrays = _readout_arrays(columns, readout_id, timestamp, lengths, decoded,
                                         line_offset)
            batch = pa.RecordBatch.from_arrays([pa.array(a) for a in arrays], schema=schema)
            produced += batch.num_rows
            yield batch
            if n_rows is not None and produced >= n_rows:
                return



#: ``(payload_bytes, payload_pos, readout_id, line_offset, after_gap)``: one run of
#: consecutive readout lines (see :meth:`ApxLogReader.iter_readouts`).
ReadoutRun = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]


class ApxLogStream(StreamDecoder[ReadoutRun]):
    """Readout lines of a legacy log, parsed from a stream of text bytes.

    Only whole lines are parsed; the incomplete last line is carried over to the next
    bytes. State besides those bytes: the line number (for messages) and whether the run
    that the next bytes start follows dropped lines.
    """

    def __init__(self, position: int, *, path: str, on_error: str, data_end: int | None,
                 first_line: int) -> None:
        super().__init__(position, path=path, on_error=on_error, data_end=data_end,
                         label="AstroPix text log", capacity=CHUNK_BYTES)
        self.line_number = first_line
        self.gap_pending = False
        self._shrank = False

    def finish(self, *, shrank: bool = False) -> Iterator[ReadoutRun]:
        self._shrank = shrank
        return super().finish(shrank=shrank)

    def _decode(self, buf: np.ndarray, have: int, final: bool) -> Iterator[ReadoutRun]:
        start = self._pos
        text = buf[start:have].tobytes()
        if final:
            text = self._drop_cut_last_line(text, self._offset + start, self._shrank)
        else:
            cut = text.rfind(b"\n") + 1
            if cut == 0:  # one very long line: wait for more bytes
                return
            text = text[:cut]
        if not text:
            return
        first_line = self.line_number
        self._pos = start + len(text)
        self.line_number += text.count(b"\n")
        yield from self._parse_lines(text, self._offset + start, first_line)

    def _at_end(self, pending: int, shrank: bool) -> None:
        if shrank:
            self.warn_truncated(self.position, "the file shrank while it was read",
                                "returning the readouts before it")

    def _kernel_state(self) -> tuple[int, bool]:
        return self.line_number, self.gap_pending

    def _restore_kernel(self, state: tuple[int, bool]) -> None:
        self.line_number, self.gap_pending = state

    def _drop_cut_last_line(self, text: bytes, offset: int, shrank: bool) -> bytes:
        """A file cut inside its last line (or that shrank after it was opened): warn and
        return the text without its incomplete last line."""
        cut = text.rfind(b"\n") + 1
        last = text[cut:]
        complete = not last.strip() or DATA_LINE.fullmatch(last)
        if complete and not shrank:
            return text
        why = "the file shrank while it was read" if shrank else "the last line is incomplete"
        self.warn_truncated(offset + (len(text) if complete else cut), why,
                            "returning the readouts before it")
        return text if complete else text[:cut]

    def _parse_lines(self, text: bytes, offset: int, first_line: int):
        matches = DATA_LINE.findall(text)
        line_starts = _nonblank_line_starts(text)
        # damaged lines: (position in text, line number, what is wrong with it)
        damaged: list[tuple[int, int, str]] = []
        if len(matches) != len(line_starts):
            # Damaged or unusual lines: slow path (this chunk only) to find them, and
            # positions of the lines that did match.
            damaged = self._unmatched_lines(text, first_line)
            line_starts = np.fromiter((m.start() for m in DATA_LINE.finditer(text)),
                                      dtype=np.int64, count=len(matches))
        ids, hexes = zip(*matches) if matches else ((), ())
        digits = np.array(ids, dtype=np.bytes_) if ids else np.empty(0, np.bytes_)
        # The pattern admits any run of digits and of hex digits: ids must fit 32 bits
        # (more than 10 significant digits cannot, and would overflow the conversion)
        # and payloads must be whole bytes.
        too_long = np.zeros(len(digits), dtype=bool)
        if digits.dtype.itemsize > 10:
            too_long = np.char.str_len(np.char.lstrip(digits, b"0")) > 10
        readout_id = np.zeros(len(digits), dtype=np.uint64)
        readout_id[~too_long] = digits[~too_long].astype(np.uint64)
        too_big = too_long | (readout_id > np.iinfo(np.uint32).max)
        lengths = np.fromiter(map(len, hexes), dtype=np.int64, count=len(hexes))
        odd = (lengths & 1).astype(bool)
        bad = too_big | odd
        for i in np.flatnonzero(bad):  # error path only
            start = int(line_starts[i])
            number = first_line + 1 + text.count(b"\n", 0, start)
            why = "has a readout id that does not fit in 32 bits" if too_big[i] else \
                "has an odd number of hex digits in its payload"
            damaged.append((start, number, why))
        if damaged:
            damaged.sort()
            if self.on_error == "raise":
                position, number, why = damaged[0]
                raise CorruptDataError(f"line {number} {why}", path=self.path,
                                       offset=offset + position)
            for position, number, why in damaged:
                self.damaged("bad_log_line", f"skipped malformed line {number} ({why})",
                             offset + position)
        keep = ~bad
        line_starts = line_starts[keep]
        hexes = [h for h, k in zip(hexes, keep) if k] if bad.any() else list(hexes)
        readout_id = readout_id[keep].astype(np.uint32)
        sizes = lengths[keep] // 2
        payload = np.frombuffer(binascii.unhexlify(b"".join(hexes)), dtype=np.uint8)
        pos = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=pos[1:])
        # Cut the runs where lines were dropped: no hit may join bytes across the gap.
        gaps = np.searchsorted(line_starts, [p for p, _, _ in damaged])
        bounds = [0, *sorted(set(gaps.tolist()) - {0, len(sizes)}), len(sizes)]
        after_gap = self.gap_pending or bool(len(gaps) and gaps[0] == 0)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a == b:
                continue
            yield (payload[pos[a] : pos[b]], pos[a:b] - pos[a], readout_id[a:b],
                   offset + line_starts[a:b], after_gap)
            after_gap = True
        # A dropped line at the end of the chunk (or a chunk of nothing else) cuts the run
        # that the next chunk starts.
        self.gap_pending = bool(len(gaps) and gaps[-1] == len(sizes)) or (
            after_gap and len(sizes) == 0)

    def _unmatched_lines(self, text: bytes, first_line: int) -> list[tuple[int, int, str]]:
        """Lines that are not readouts: (position in ``text``, line number, what is
        wrong). Error path only: loops over lines."""
        position = 0
        found = []
        for number, raw in enumerate(text.splitlines(keepends=True), first_line + 1):
            if raw.strip() and not DATA_LINE.match(raw):
                found.append((position, number,
                              f"is not '<readout_id>\\t b'<hex>'': {raw[:60]!r}"))
            position += len(raw)
        return found



class ApxLogHitStream(ApxLogStream):
    """:class:`ApxLogStream` with the payloads' hits decoded too: yields
    ``(run, decoded)``; the hit decoder's carried bytes are part of the state."""

    def __init__(self, position: int, *, path: str, on_error: str, data_end: int | None,
                 first_line: int, hits: Any) -> None:
        super().__init__(position, path=path, on_error=on_error, data_end=data_end,
                         first_line=first_line)
        self.hits = hits  # the chip generation's hit decoder (see apx.new_hit_decoder)

    def _decode(self, buf: np.ndarray, have: int, final: bool) -> Iterator[Any]:
        for run in super()._decode(buf, have, final):
            payload, pos, readout_id, _, after_gap = run
            if after_gap:
                self.hits.reset()  # the byte stream is not continuous across dropped lines
            lengths = np.diff(np.append(pos, len(payload))).astype(np.uint32)
            yield run, self.hits.decode(payload, pos, lengths, readout_id,
                                        np.zeros(len(pos), dtype=np.uint64))

    def _kernel_state(self) -> tuple[int, bool, bytes | None]:
        return (*super()._kernel_state(), self.hits.carried)

    def _restore_kernel(self, state: tuple[int, bool, bytes | None]) -> None:
        line_number, gap_pending, carried = state
        super()._restore_kernel((line_number, gap_pending))
        if carried is None:
            self.hits.reset()
        else:
            self.hits.carry[: len(carried)] = np.frombuffer(carried, np.uint8)
            self.hits.carry_len = len(carried)


def _nonblank_line_starts(text: bytes) -> np.ndarray:
    """Start offsets of the lines of ``text`` that are not empty (``\\n`` or ``\\r\\n``)."""
    data = np.frombuffer(text, dtype=np.uint8)
    newlines = np.flatnonzero(data == 0x0A)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    length = ends - starts
    has_cr = np.zeros(len(starts), dtype=bool)
    nonempty = length > 0
    has_cr[nonempty] = data[ends[nonempty] - 1] == 0x0D
    return starts[length - has_cr > 0].astype(np.int64)


def _readout_arrays(columns, readout_id, timestamp, lengths, decoded, line_offset):
    values = {"readout_id": readout_id, "timestamp": timestamp, "wall_timestamp": timestamp,
              "payload_length": lengths,
              "n_hits": decoded.readout_hits, "status": decoded.status,
              "byte_offset": line_offset.astype(np.uint64)}
    out = []
    for name in columns:
        if name in values:
            out.append(values[name])
        else:
            out.append((decoded.status & np.uint8(1 << STATUS_FLAGS.index(name))) != 0)
    return out


def looks_like_apx_log(head: bytes, source: Source) -> bool:
    """Probe: a ``Namespace(`` metadata line or readout lines near the start."""
    return b"Namespace(" in head or bool(DATA_LINE.search(head))


def convert_apx_log(log_path: str, apx_path: str, *, overwrite: bool = True) -> int:
    """Convert a legacy text log to an ``.apx`` file; return the number of readouts.

    The header is the log's metadata (as ``read_apx_log`` parses it); timestamps are 0.
    The payload bytes are copied unchanged, so ``read_apx`` of the result gives the same
    hits as ``read_apx_log`` of the log.
    """
    reader = ApxLogReader(Source(str(log_path)))
    header = json.dumps(reader.header, ensure_ascii=False).encode("utf-8")
    count = 0
    with atomic_output(apx_path, overwrite=overwrite) as out:
        out.write(MAGIC + len(header).to_bytes(4, "little") + header)
        for payload, pos, readout_id, _, _ in reader.iter_readouts():
            lengths = np.diff(np.append(pos, len(payload)))
            out.write(_readout_block(payload, pos, lengths, readout_id).tobytes())
            count += len(pos)
    return count


def _readout_block(payload: np.ndarray, pos: np.ndarray, lengths: np.ndarray,
                   readout_id: np.ndarray) -> np.ndarray:
    """Readouts ``FE DC BA | id | timestamp 0 | length | payload`` laid out with numpy."""
    header = np.zeros(len(pos), dtype=[("marker", "3u1"), ("id", "<u4"), ("ts", "<u8"),
                                       ("len", "<u4")])
    header["marker"] = (0xFE, 0xDC, 0xBA)
    header["id"] = readout_id
    header["len"] = lengths
    header_bytes = header.view(np.uint8).reshape(len(pos), header.dtype.itemsize)
    size = header.dtype.itemsize
    starts = np.arange(len(pos), dtype=np.int64) * size + pos
    out = np.empty(len(pos) * size + len(payload), dtype=np.uint8)
    out[(starts[:, None] + np.arange(size)).ravel()] = header_bytes.ravel()
    payload_dest = np.repeat(starts + size - pos, lengths) + np.arange(len(payload))
    out[payload_dest] = payload
    return out
