"""Legacy AstroPix text logs (``.log``, ``read_apx_log``) and their conversion to ``.apx``.

Layout: ``docs/formats/apx-log.md``. Older DAQ versions saved runs as text: metadata
lines first — ``Name: {python dict}`` lines and one ``Namespace(...)`` line (the DAQ's
command-line options) — then one readout per line, ``<readout_id>\\t b'<hex payload>'``.
The payloads are decoded exactly like ``.apx`` payloads (same kernel, same carry of a
cut hit's bytes from one readout to the next), so the hit table has the same 18 columns.

Decisions:

* **What makes a file a log** (the format page's section of that name): the text before
  the first readout line is UTF-8 (a metadata line may be cp1252, what the DAQ wrote on
  Windows) without control bytes; the first byte that is not is a
  :class:`~bindf.errors.HeaderError` in a log header, else an
  :class:`~bindf.errors.UnknownFormatError` (binary data), at its offset. The file
  starts with a metadata, ``Namespace(...)`` or readout line, or holds the
  ``Namespace(...)`` line before its first readout; other text is an
  :class:`~bindf.errors.UnknownFormatError` (under ``on_error="warn"``/``"skip"``,
  malformed readout lines). An empty file has no rows.
* **The header** is every line up to the ``Namespace(...)`` line (the DAQ writes it
  last) and the metadata lines right after it; without one, the metadata lines at the
  top. A file cut inside it is a :class:`~bindf.errors.HeaderError` at the end of the
  file, whatever the cut point (the chip version is not known yet; ``bindf.follow``
  waits for more).
* **The last line** may lack its newline: a complete readout line is read, any other
  unterminated last line is incomplete (:class:`~bindf.errors.TruncatedFileWarning`).
* Metadata values are parsed with :func:`ast.literal_eval` (never ``eval``). The
  ``Namespace(...)`` line becomes a dict of its keyword arguments under ``"Namespace"``;
  every ``Name: {...}`` line becomes ``header["Name"]``. Python values that JSON cannot
  hold are converted: tuples → lists, sets → sorted lists, bytes → hex text, anything
  else → its ``repr``. Other text lines before the ``Namespace(...)`` line are kept, in
  order, under ``header["comments"]``. ``readout_uid`` is taken from the ``Namespace``
  line's ``chipVer`` (3 → 3000, AstroPix 3; 4 → 4000, AstroPix 4; absent → 4000) unless
  present; AstroPix 3 logs are decoded with the AstroPix 3 hit kernel and give its
  columns (``stitch=`` as for ``read_apx``).
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
import codecs
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._source import Source, user_path
from ..errors import (
    BindfError,
    CorruptDataError,
    HeaderError,
    TruncatedHeaderError,
    UnknownFormatError,
    UnsupportedReadoutError,
)
from ._apx_hits import STATUS_FLAGS, Decoded
from ._base import FormatReader, coalesced_batches, numpy_batch
from ._stream import BatchStream, StreamDecoder, decode_file
from .apx import (
    APX3_READOUT_UID,
    APX4_READOUT_UID,
    HIT_SCHEMAS,
    MAGIC,
    READOUT_DTYPE,
    READOUT_HEADER_SIZE,
    READOUT_MARKER,
    READOUT_SCHEMAS,
    SUPPORTED_READOUTS,
    new_hit_columns,
    new_hit_decoder,
    resolve_stitch,
)

#: One readout line: id, TAB, optional blanks, b'hex'. Anything else after the header
#: is a malformed line.
DATA_LINE = re.compile(rb"^(\d+)\t[ ]*b'([0-9a-fA-F]*)'[ \t]*\r?$", re.MULTILINE)
#: The same lines, matched without groups: ``subn`` counts them making no object a line.
_DATA_LINE_UNGROUPED = re.compile(DATA_LINE.pattern.replace(b"(", b"(?:"), re.MULTILINE)
_FIRST_DATA_LINE = re.compile(rb"^\d+\t", re.MULTILINE)
_METADATA_LINE = re.compile(r"^([A-Za-z_][\w .-]*):\s*(\{.*\})\s*$")
#: How a readout line starts (a file whose first line starts so is a log without header).
_READOUT_START = re.compile(rb"[ \t]*\d+\t[ ]*b'")
#: How a header line starts: the Namespace line or a metadata line ``Name: {``, after
#: blank lines (and a byte order mark, which Windows editors put first).
_HEADER_START = re.compile(
    rb"\s*(?:\xef\xbb\xbf)?[ \t]*(?:Namespace\(|[A-Za-z_][\w .-]*:[ \t]*\{)")
#: The start of a header line cut by the end of the file (``Names``,
#: ``Voltagecard: {'thp``), or of a readout line cut before its tab (group 1): the only
#: line of a file cut inside its first line.
_CUT_FIRST_LINE = re.compile(
    rb"\s*(?:\xef\xbb\xbf)?[ \t]*(?:Namespace\(.*|[A-Za-z_][\w .-]*(?::[ \t]*(?:\{.*)?)?|(\d+))")
_NAMESPACE_LINE = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r\f\v]*Namespace\(", re.MULTILINE)
#: Control bytes other than whitespace: never in a text log, the mark of binary data.
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0e-\x1f]")
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
#: What the DAQ's ``open(path, "w")`` wrote on (Western) Windows: accepted for metadata
#: lines that are not UTF-8 (a path or name with accents in the options).
WINDOWS_CODE_PAGE = "cp1252"
#: Bytes of text decoded per step (whole lines; a longer line is still read whole).
CHUNK_BYTES = 4 << 20
#: The metadata block is small; refuse to treat megabytes of text as a header.
MAX_HEADER_BYTES = 16 << 20


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_text(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        try:  # JSON (Arrow metadata, Parquet, read_headers) writes an integer's digits,
            str(value)  # and Python refuses to spell those of one past ~4,300 of them
        except ValueError:
            raise ValueError(f"an integer of {value.bit_length()} bits has more digits than "
                             "a header can write") from None
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else repr(value)
    return repr(value)


def _text(value: str) -> str:
    """``value``, if it is text: a literal may spell a lone surrogate (``'\\ud800'``),
    which no UTF-8 header (Arrow metadata, Parquet, JSON) can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"a string holds {value[exc.start]!r}, a lone surrogate, which "
                         "is not text") from None
    return value


def parse_namespace(text: str) -> dict[str, Any]:
    """``Namespace(a=1, b='x')`` → ``{"a": 1, "b": "x"}`` with literal values only."""
    node = ast.parse(text.strip(), mode="eval").body
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "Namespace" and not node.args):
        raise ValueError("not a Namespace(...) call with keyword arguments")
    return {kw.arg: _jsonable(ast.literal_eval(kw.value)) for kw in node.keywords
            if kw.arg is not None}


class LogHeader(NamedTuple):
    """What :func:`parse_header` found at the top of a log."""

    header: dict[str, Any]
    #: File offset of the line after the header: where the readout lines begin.
    data_offset: int
    #: Offset of the ``Namespace(...)`` line (0 without one), for chip-version errors.
    namespace_offset: int
    #: False for an empty (or blank) file: nothing is decided yet.
    settled: bool


def parse_header(head: bytes, *, complete: bool, path: str, strict: bool = True) -> LogHeader:
    """Split the start of a log (``head``; the whole file when ``complete``) into its
    parsed header and the offset where the readouts begin, or raise when the file is not
    a log or is cut inside its header (the rules of the module docstring).

    ``strict`` (``on_error="raise"``): text with no log structure is an
    :class:`~bindf.errors.UnknownFormatError`; otherwise its lines are left to the
    readout parser, which drops them as malformed lines.
    """
    first = _FIRST_DATA_LINE.search(head)
    region = head[: first.start() if first else len(head)]
    cut = complete and first is None  # the region's last line may end inside a character
    bad = _non_text_offset(region, cut=cut)
    if bad is not None:
        raise _not_text(region, bad, path)
    if not region.strip():
        if first is None:  # empty, or blank lines: the DAQ has written nothing yet
            return LogHeader({}, 0, 0, settled=False)
        return LogHeader({}, first.start(), 0, settled=True)  # readouts without a header
    namespace = _NAMESPACE_LINE.search(region)
    if namespace is None and not _HEADER_START.match(region):
        cut_line = _CUT_FIRST_LINE.fullmatch(region) if cut else None
        if cut_line is not None and cut_line.group(1) is None:
            raise _incomplete_header(len(head), complete, path)
        if cut_line is None and first is None and strict:
            start = len(region) - len(region.lstrip())
            line = region[start:].split(b"\n", 1)[0]
            raise UnknownFormatError(
                "not an AstroPix text log: it starts with neither a metadata line "
                "('Name: {...}') nor a readout line ('<readout_id>\\t b'<hex>''), and "
                f"has no 'Namespace(...)' line; its first line: {line[:60]!r}",
                path=path, offset=start)
        # A first readout line cut before its tab; readouts after a damaged first line;
        # or (on_error="warn"/"skip") lines for the readout parser to drop as malformed.
        return LogHeader({}, 0, 0, settled=True)
    if namespace is None and first is None:
        raise _incomplete_header(len(head), complete, path)
    return _split_header(region, None if namespace is None else namespace.start(),
                         cut=cut, path=path)


def _split_header(region: bytes, namespace_at: int | None, *, cut: bool,
                  path: str) -> LogHeader:
    """Parse the header lines at the top of ``region`` (the text before the first
    readout line): every line before the ``Namespace(...)`` line (at ``namespace_at``),
    then metadata lines; the first other line begins the readouts."""
    header: dict[str, Any] = {}
    comments: list[str] = []
    namespace_offset = 0
    data_offset = len(region)
    for number, match in enumerate(_LINE.finditer(region), 1):
        raw, offset = match.group(), match.start()
        line = _line_text(raw).strip().lstrip("\ufeff").strip()
        if not line:
            continue
        is_namespace = line.startswith("Namespace(")
        metadata = None if is_namespace else _METADATA_LINE.match(line)
        if not (is_namespace or metadata or (namespace_at is not None and offset < namespace_at)):
            data_offset = offset
            break
        try:
            if is_namespace:
                header["Namespace"] = parse_namespace(line)
                namespace_offset = offset
            elif metadata:
                header[metadata.group(1).strip()] = _jsonable(ast.literal_eval(metadata.group(2)))
            else:
                comments.append(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            if cut and not raw.endswith(b"\n"):  # the file ends inside this line
                if "Namespace" in header:  # after a complete header: a cut readout line
                    data_offset = offset
                    break
                raise _incomplete_header(len(region), True, path) from None
            raise HeaderError(f"log header line {number} is not a Python literal bindf can "
                              f"keep: {exc}", path=path, offset=offset) from None
    if comments:
        header["comments"] = comments
    return LogHeader(header, data_offset, namespace_offset, settled=True)


def _incomplete_header(size: int, complete: bool, path: str) -> HeaderError:
    if complete:  # the whole file was looked at: it ends inside its header
        return TruncatedHeaderError(
            "the file ends inside the log header: its 'Namespace(...)' line is missing or "
            "cut, and no readout line follows", path=path, offset=size)
    return HeaderError(f"no 'Namespace(...)' line and no readout line in the first {size} "
                       "bytes", path=path, offset=size)


def _non_text_offset(data: bytes, *, cut: bool) -> int | None:
    """Offset of the first byte of ``data`` that cannot be in a log's header text: a
    control byte (a NUL …), or a byte that is not UTF-8 outside a metadata line in the
    Windows code page. ``cut``: ``data`` may end inside a character. None: all text."""
    position = 0
    while True:
        control = _CONTROL_BYTE.search(data, position)
        end = control.start() if control else len(data)
        try:
            codecs.utf_8_decode(data[position:end], "strict", not (cut and end == len(data)))
            bad = control.start() if control else None
        except UnicodeDecodeError as exc:
            bad = position + exc.start
        if bad is None or data[bad] < 0x80:
            return bad
        line_start = data.rfind(b"\n", 0, bad) + 1
        line_end = data.find(b"\n", bad) + 1 or len(data)
        line = data[line_start:line_end]
        if not _HEADER_START.match(line) or _CONTROL_BYTE.search(line):
            return bad
        try:
            line.decode(WINDOWS_CODE_PAGE)
        except UnicodeDecodeError:
            return bad
        position = line_end


def _not_text(region: bytes, bad: int, path: str) -> BindfError:
    """The error for a byte that is not text: in a log header (a metadata line first, or
    a ``Namespace(...)`` line somewhere), or in binary data (no log structure)."""
    byte = region[bad]
    what = f"byte {byte:#04x} ({'not UTF-8' if byte >= 0x80 else 'a control byte'})"
    if _HEADER_START.match(region) or _NAMESPACE_LINE.search(region):
        number = region.count(b"\n", 0, bad) + 1
        return HeaderError(f"line {number} of the log header is not text: {what}",
                           path=path, offset=bad)
    return UnknownFormatError(f"not an AstroPix text log (UTF-8 text): {what}; the file "
                              "looks binary", path=path, offset=bad)


def _line_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a metadata line in the Windows code page (checked), or
        return raw.decode(WINDOWS_CODE_PAGE, "replace")  # cut inside its last character


#: ``chipVer`` of an AstroPix text log's ``Namespace(...)`` line → ``readout_uid``.
CHIP_VERSION_READOUTS: dict[int, int] = {3: APX3_READOUT_UID, 4: APX4_READOUT_UID}


def log_readout_uid(header: Mapping[str, Any], *, path: str | None = None,
                    offset: int = 0) -> int:
    """The ``readout_uid`` of an AstroPix text log (which chip's hits its payloads hold),
    from its parsed header (:func:`parse_header`: the ``Namespace(...)`` line's keyword
    arguments are under ``header["Namespace"]``). Rules, in order:

    1. an explicit integer ``header["readout_uid"]`` wins;
    2. ``header["Namespace"]["chipVer"]``: 3 → 3000 (AstroPix 3), 4 → 4000 (AstroPix 4);
       a value given as text (``'3'``) is read as the integer it spells;
    3. no ``chipVer`` (or no ``Namespace`` line): 4000, as bindf read such logs before.

    Any other ``chipVer`` raises :class:`~bindf.errors.UnsupportedReadoutError` with
    ``path`` and ``offset`` (the reader passes the offset of the Namespace line).
    """
    uid = header.get("readout_uid")
    if isinstance(uid, int) and not isinstance(uid, bool):
        return uid
    namespace = header.get("Namespace")
    version = namespace.get("chipVer") if isinstance(namespace, Mapping) else None
    if version is None:
        return APX4_READOUT_UID
    given = version
    if isinstance(version, str):
        try:
            version = ast.literal_eval(version.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass  # (text that is no literal, or a hostile one: the refusal below)
    if isinstance(version, int) and not isinstance(version, bool):
        if version in CHIP_VERSION_READOUTS:
            return CHIP_VERSION_READOUTS[version]
    shown = repr(given)  # (as written: what it evaluates to may be too long to print)
    if len(shown) > 60:
        shown = f"{shown[:40]}... ({len(shown)} characters)"
    raise UnsupportedReadoutError(
        f"the log's Namespace line has chipVer={shown}; bindf reads AstroPix "
        f"{' and '.join(str(v) for v in CHIP_VERSION_READOUTS)} logs",
        path=path, offset=offset,
    )


class ApxLogReader(FormatReader):
    """Legacy AstroPix text log: the same hit (or readout) table as ``read_apx``.

    Options: ``level="hits"|"readouts"`` as for ``read_apx``. See the module docstring for
    how metadata lines become the header.
    """

    stream_state_ignores_columns = True  # (see FormatReader)

    name: ClassVar[str] = "apx_log"
    label: ClassVar[str] = "AstroPix text log"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        self.level = self.options.pop("level", "hits")
        stitch = self.options.pop("stitch", None)
        if self.level not in ("hits", "readouts"):
            raise ValueError(f"level must be 'hits' or 'readouts', not {self.level!r}")
        self.refuse_options(self.options)
        head = f.read(min(self.source.size, MAX_HEADER_BYTES))
        complete = len(head) < MAX_HEADER_BYTES or len(head) == self.source.size
        parsed = parse_header(head, complete=complete, path=self.path,
                              strict=self.on_error == "raise")
        header = parsed.header
        self.data_offset = parsed.data_offset
        self._settled = parsed.settled
        uid = header["readout_uid"] = log_readout_uid(header, path=self.path,
                                                      offset=parsed.namespace_offset)
        if uid not in SUPPORTED_READOUTS:
            raise HeaderError(f"readout_uid {uid!r} is not supported", path=self.path, offset=0)
        self.readout_uid: int = uid
        self.stitch = resolve_stitch(uid, stitch)
        self.header_lines = head[: self.data_offset].count(b"\n")
        return header

    @property
    def settled(self) -> bool:
        """False for a file with nothing in it yet: its header (and with it the chip
        version) is still to come, so a follower reopens it as it grows."""
        return self._settled

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
            return numpy_batch(arrays, schema)

        return BatchStream(stream, to_batch)

    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([self.schema.field(c) for c in columns])
        decoder = new_hit_decoder(self.readout_uid, stitch=self.stitch,
                                  store_hits=self.level == "hits")
        hit_columns = new_hit_columns(self.readout_uid)

        def runs_arrays() -> Iterator[list[np.ndarray]]:
            for payload, pos, readout_id, line_offset, after_gap in self.iter_readouts():
                if after_gap:
                    decoder.reset()  # the byte stream is not continuous across dropped lines
                lengths = np.diff(np.append(pos, len(payload))).astype(np.uint32)
                timestamp = np.zeros(len(pos), dtype=np.uint64)
                decoded = decoder.decode(payload, pos, lengths, readout_id, timestamp)
                if self.level == "hits":
                    yield hit_columns(decoded, columns)
                else:
                    yield _readout_arrays(columns, readout_id, timestamp, lengths, decoded,
                                          line_offset)

        if n_rows is None:  # (damaged lines cut a chunk into runs: small ones joined)
            yield from coalesced_batches(runs_arrays(), schema, batch_size)
            return
        produced = 0
        for arrays in runs_arrays():
            batch = numpy_batch(arrays, schema)
            produced += batch.num_rows
            yield batch
            if produced >= n_rows:
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
        return the text without its incomplete last line. A last line that lacks only its
        newline is complete (text files often end so) and is kept: a readout line cut
        anywhere ends before its closing quote and cannot match :data:`DATA_LINE`."""
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
        line_starts = _nonblank_line_starts(text)
        clean = _clean_readouts(text, line_starts)
        if clean is not None:
            line_starts, readout_id, sizes, payload = clean
            damaged = np.empty(0, dtype=np.int64)
        else:
            line_starts, readout_id, sizes, payload, damaged, too_big, odd = \
                _checked_readouts(text, line_starts)
            if len(damaged) and self.on_error == "raise" and damaged[0]:
                # The lines before the first damaged one are whole and intact: their
                # readouts are handed out before the error, as every stream does.
                yield from self._parse_lines(text[: int(damaged[0])], offset, first_line)
            if len(damaged):
                self._report_damaged(text, offset, first_line, damaged, too_big, odd)
        pos = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=pos[1:])
        # Cut the runs where lines were dropped: no hit may join bytes across the gap.
        gaps = np.searchsorted(line_starts, damaged)
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

    def _report_damaged(self, text: bytes, offset: int, first_line: int, damaged: np.ndarray,
                        too_big: set[int], odd: set[int]) -> None:
        """Apply ``on_error`` to the damaged lines starting at ``damaged`` (sorted
        positions in ``text``): raise at the first, warn about each, or count them all."""
        newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 0x0A)
        numbers = first_line + 1 + np.searchsorted(newlines, damaged)

        def why(position: int) -> str:
            if position in too_big:
                return "has a readout id that does not fit in 32 bits"
            if position in odd:
                return "has an odd number of hex digits in its payload"
            line = text[position : text.find(b"\n", position) + 1 or len(text)]
            return f"is not '<readout_id>\\t b'<hex>'': {line[:60]!r}"

        if self.on_error == "warn":
            for position, number in zip(damaged.tolist(), numbers.tolist()):
                self.damaged("bad_log_line", f"skipped malformed line {number} ({why(position)})",
                             offset + position)
            return
        position, number = int(damaged[0]), int(numbers[0])
        if self.on_error == "raise":
            raise CorruptDataError(f"line {number} {why(position)}", path=self.path,
                                   offset=offset + position)
        self.damaged("bad_log_line", f"skipped malformed line {number} ({why(position)})",
                     offset + position, count=len(damaged))



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


#: Readout fields of the lines of a text: positions of the readout lines, their ids
#: (uint32), payload sizes in bytes, and the payloads joined (uint8).
Readouts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _clean_readouts(text: bytes, line_starts: np.ndarray) -> Readouts | None:
    """The readouts of ``text`` when each of its nonblank lines (starting at
    ``line_starts``) is a readout line of at most 10 id digits that fits 32 bits and
    whole payload bytes; None for any other text (a damaged or unusual line), which
    :func:`_checked_readouts` parses line by line.

    Why: logs are nearly always clean, and the line-by-line parse makes three Python
    objects a line, whose garbage collection was most of a read (18 MB of log, 226,000
    readouts: 0.37-0.41 s, 0.16 s with the collector off). Here the lines are counted by
    a regular expression without groups, and once each is known to be a readout line
    its fields are cut out with numpy from the positions of its tab and quotes."""
    if _DATA_LINE_UNGROUPED.subn(b"", text)[1] != len(line_starts):
        return None
    data = np.frombuffer(text, dtype=np.uint8)
    tabs = np.flatnonzero(data == 0x09)
    id_ends = tabs[np.searchsorted(tabs, line_starts)]  # the tab after the id's digits
    digits = id_ends - line_starts
    # Every line is a readout line: two quotes each, around its payload, and none in the
    # blank lines between them.
    quotes = np.flatnonzero(data == 0x27)
    hex_starts, hex_ends = quotes[0::2] + 1, quotes[1::2]
    hex_lengths = hex_ends - hex_starts
    if len(line_starts) and (digits.max() > 10 or (hex_lengths & 1).any()):
        return None  # long ids (leading zeros, or too many digits), half bytes
    readout_id = np.zeros(len(line_starts), dtype=np.uint64)
    for place in range(int(digits.max(initial=0))):  # one step per digit place
        has = digits > place
        # (uint64 before any arithmetic: NumPy 1 keeps a uint8 minus a scalar in uint8)
        digit = data[id_ends[has] - 1 - place].astype(np.uint64) - np.uint64(0x30)
        readout_id[has] += digit * np.uint64(10**place)
    if len(readout_id) and int(readout_id.max()) > np.iinfo(np.uint32).max:
        return None
    # The payloads' hex digits: a mask that each payload's first digit opens and the
    # quote after it closes (empty payloads left out: they would open and close at one
    # place; all other places differ).
    filled = hex_lengths > 0
    edges = np.zeros(len(data) + 1, dtype=np.int8)
    edges[hex_starts[filled]] = 1
    edges[hex_ends[filled]] = -1
    inside = np.cumsum(edges[:-1], dtype=np.int8).view(bool)
    payload = np.frombuffer(binascii.unhexlify(data[inside].tobytes()), dtype=np.uint8)
    return line_starts, readout_id.astype(np.uint32), hex_lengths // 2, payload


def _checked_readouts(
    text: bytes, line_starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, set[int], set[int]]:
    """The readouts of ``text`` (nonblank lines at ``line_starts``) parsed line by line
    (:data:`DATA_LINE`), with the lines that are damaged: ``(*Readouts, damaged,
    too_big, odd)``, ``damaged`` the sorted positions of the lines that are no readout
    (blank lines aside), ``too_big`` and ``odd`` those of readout lines whose id does
    not fit 32 bits or whose payload is not whole bytes. The readouts are those of the
    undamaged lines."""
    matches = DATA_LINE.findall(text)
    not_readouts = np.empty(0, dtype=np.int64)  # positions of lines that are no readout
    if len(matches) != len(line_starts):
        # Damaged or unusual lines (this chunk only): the positions of the lines that
        # did match, and of those that did not.
        readout_starts = np.fromiter((m.start() for m in DATA_LINE.finditer(text)),
                                     dtype=np.int64, count=len(matches))
        not_readouts = _inked(text, line_starts[~np.isin(line_starts, readout_starts)])
        line_starts = readout_starts
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
    damaged = np.sort(np.concatenate([not_readouts, line_starts[bad]]))
    keep = ~bad
    hexes = [h for h, k in zip(hexes, keep) if k] if bad.any() else list(hexes)
    payload = np.frombuffer(binascii.unhexlify(b"".join(hexes)), dtype=np.uint8)
    return (line_starts[keep], readout_id[keep].astype(np.uint32), lengths[keep] // 2, payload,
            damaged, set(line_starts[too_big].tolist()), set(line_starts[odd].tolist()))


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


#: Bytes that are not whitespace (``bytes.strip`` removes the others).
_INK = np.ones(256, dtype=bool)
_INK[list(b" \t\n\r\x0b\x0c")] = False


def _inked(text: bytes, starts: np.ndarray) -> np.ndarray:
    """The lines of ``text`` beginning at ``starts`` that are not only whitespace."""
    data = np.frombuffer(text, dtype=np.uint8)
    ink = np.concatenate(([0], np.cumsum(_INK[data])))
    newlines = np.flatnonzero(data == 0x0A)
    after = np.searchsorted(newlines, starts)
    ends = np.append(newlines, len(data))[after]
    return starts[ink[ends] > ink[starts]]


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
    """Probe: what :func:`parse_header` takes for a log. Text up to the first readout
    line, starting with a metadata line, the ``Namespace(...)`` line or a readout line,
    or holding the ``Namespace(...)`` line (the head may end anywhere, even in a line)."""
    first = _FIRST_DATA_LINE.search(head)
    region = head[: first.start() if first else len(head)]
    if _non_text_offset(region, cut=True) is not None:
        return False
    if not region.strip():
        return first is not None and bool(_READOUT_START.match(head, first.start()))
    return bool(_NAMESPACE_LINE.search(region) or _HEADER_START.match(region))


def convert_apx_log(log_path: str | os.PathLike[str], apx_path: str | os.PathLike[str], *,
                    overwrite: bool = True) -> int:
    """Convert a legacy text log to an ``.apx`` file; return the number of readouts.

    The header is the log's metadata (as ``read_apx_log`` parses it); timestamps are 0.
    The payload bytes are copied unchanged, so ``read_apx`` of the result gives the same
    hits as ``read_apx_log`` of the log.
    """
    reader = ApxLogReader(Source(user_path(os.fspath(log_path))))
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
    header = np.zeros(len(pos), dtype=READOUT_DTYPE)
    header["marker"] = READOUT_MARKER
    header["readout_id"] = readout_id
    header["length"] = lengths
    header_bytes = header.view(np.uint8).reshape(len(pos), READOUT_HEADER_SIZE)
    size = READOUT_HEADER_SIZE
    starts = np.arange(len(pos), dtype=np.int64) * size + pos
    out = np.empty(len(pos) * size + len(payload), dtype=np.uint8)
    out[(starts[:, None] + np.arange(size)).ravel()] = header_bytes.ravel()
    payload_dest = np.repeat(starts + size - pos, lengths) + np.arange(len(payload))
    out[payload_dest] = payload
    return out
