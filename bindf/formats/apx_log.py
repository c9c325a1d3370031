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
  ``header["comments"]``. ``readout_uid`` is set to 4000 (AstroPix 4) unless present.
* Logs carry no per-readout timestamp: the ``timestamp`` column is 0.
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
import warnings
from collections.abc import Iterator
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._source import Source, still_in_file
from ..errors import CorruptDataError, CorruptDataWarning, HeaderError, TruncatedFileWarning
from ._apx_hits import STATUS_FLAGS, HitColumns, HitDecoder
from ._base import FormatReader
from .apx import HITS_SCHEMA, MAGIC, READOUTS_SCHEMA, SUPPORTED_READOUTS

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
        for number, raw in enumerate(head[: self.data_offset].splitlines(keepends=True), 1):
            line = raw.decode("utf-8", "replace").strip()
            try:
                if not line:
                    pass
                elif line.startswith("Namespace("):
                    header["Namespace"] = parse_namespace(line)
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
        uid = header.setdefault("readout_uid", 4000)
        if uid not in SUPPORTED_READOUTS:
            raise HeaderError(f"readout_uid {uid!r} is not supported", path=self.path, offset=0)
        self.header_lines = head[: self.data_offset].count(b"\n")
        return header

    @property
    def schema(self) -> pa.Schema:
        return HITS_SCHEMA if self.level == "hits" else READOUTS_SCHEMA

    def iter_readouts(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                              bool]]:
        """Yield ``(payload_bytes, payload_pos, readout_id, line_offset, after_gap)`` per run
        of consecutive readout lines (payloads concatenated in ``payload_bytes``).

        A chunk of whole lines is one run unless damaged lines were dropped from it
        (``on_error="warn"/"skip"``): then it is cut there, and ``after_gap`` says that the
        run does not continue the previous one in the chip's byte stream.
        """
        line_number = self.header_lines
        self._gap_pending = False
        with self.source.open() as f:
            f.seek(self.data_offset)
            offset = self.data_offset
            rest = b""
            remaining = self.source.size - self.data_offset
            shrank = False
            while remaining > 0 or rest:
                want = min(CHUNK_BYTES, remaining)
                start = f.tell()
                chunk = f.read(want) if want > 0 else b""
                chunk = chunk[: still_in_file(f, start, len(chunk))]
                # Fewer bytes than asked: the file shrank while it was read. Its end is
                # here (asking again would get nothing, for ever).
                shrank = shrank or len(chunk) < want
                remaining = 0 if shrank else remaining - len(chunk)
                text = rest + chunk
                if remaining > 0:
                    cut = text.rfind(b"\n") + 1
                    if cut == 0:  # one very long line: keep reading
                        rest = text
                        continue
                    text, rest = text[:cut], text[cut:]
                else:
                    rest = b""
                    text = self._drop_cut_last_line(text, offset, shrank)
                if not text:
                    break
                yield from self._parse_lines(text, offset, line_number)
                line_number += text.count(b"\n")
                offset += len(text)

    def _drop_cut_last_line(self, text: bytes, offset: int, shrank: bool) -> bytes:
        """A file cut inside its last line (or that shrank after it was opened): warn and
        return the text without its incomplete last line."""
        cut = text.rfind(b"\n") + 1
        last = text[cut:]
        complete = not last.strip() or DATA_LINE.fullmatch(last)
        if complete and not shrank:
            return text
        why = "the file shrank while it was read" if shrank else "the last line is incomplete"
        warnings.warn(TruncatedFileWarning(
            f"truncated AstroPix text log: {why}; returning the readouts before it",
            path=self.path, offset=offset + (len(text) if complete else cut)), stacklevel=4)
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
            self.note_error("bad_log_line", len(damaged))
            if self.on_error == "warn":
                for position, number, why in damaged:
                    warnings.warn(CorruptDataWarning(f"skipped malformed line {number} ({why})",
                                                     path=self.path, offset=offset + position),
                                  stacklevel=5)
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
        after_gap = self._gap_pending or bool(len(gaps) and gaps[0] == 0)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a == b:
                continue
            yield (payload[pos[a] : pos[b]], pos[a:b] - pos[a], readout_id[a:b],
                   offset + line_starts[a:b], after_gap)
            after_gap = True
        # A dropped line at the end of the chunk (or a chunk of nothing else) cuts the run
        # that the next chunk starts.
        self._gap_pending = bool(len(gaps) and gaps[-1] == len(sizes)) or (
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

    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([self.schema.field(c) for c in columns])
        decoder = HitDecoder(store_hits=self.level == "hits")
        hit_columns = HitColumns()
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
    values = {"readout_id": readout_id, "timestamp": timestamp, "payload_length": lengths,
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
