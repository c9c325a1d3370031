"""Strict parsing of the JSON headers that FLIM LABS and AstroPix files carry.

Every format here stores ``magic | u32 length | JSON text``. The JSON is parsed (never
``eval``) and held to a stricter standard than ``json.loads`` applies by default, because
a header that is *almost* JSON is a sign of a damaged file and guessing would silently
change the user's metadata:

* the text must be UTF-8 and the top level an object;
* duplicate keys, ``NaN``/``Infinity``, numbers beyond a 64-bit float (``1e999``, which
  would become infinity and could not be written back as JSON) and lone UTF-16
  surrogates are rejected;
* nesting deeper than :data:`MAX_HEADER_DEPTH` is rejected (CPython would otherwise raise
  ``RecursionError``, which is not a ``ValueError``).

A compiled parser (``bindf/_kernels/_jsonparse.pyx``) takes the headers that meet these
rules, in one pass; it leaves every other text to the standard library's parser, which
says what is wrong and where.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from typing import Any, BinaryIO

from ._kernels import _jsonparse
from .errors import HeaderError, TruncatedHeaderError

#: Deeper nesting than this is not metadata any instrument writes; refuse it early.
MAX_HEADER_DEPTH = 64

_U32 = struct.Struct("<I")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # in C; a Python loop here was a tenth of a small file's read
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 32 else text[:29] + "..."
        raise ValueError(f"the number {shown} is beyond a 64-bit float")
    return value


#: The standard library's decoder, held to bindf's rules: it parses every header the
#: compiled parser (``_jsonparse``) leaves alone, and gives the error bindf reports. One
#: decoder for all headers: ``json.loads`` with arguments builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates,
                            parse_constant=_reject_constant, parse_float=_finite_float)


#: A \uD800-\uDFFF escape: the only way a lone surrogate gets into parsed JSON (the
#: UTF-8 decoder refuses encoded surrogates).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json_header(
    raw: bytes | bytearray | memoryview,
    *,
    path: str | os.PathLike[str] | None = None,
    offset: int | None = None,
) -> dict[str, Any]:
    """Parse ``raw`` as a strict JSON object, raising :class:`HeaderError` otherwise."""
    # The usual case, a valid header, in one compiled pass (see _jsonparse: it accepts
    # only what the rules below accept, and builds the same values).
    value = _jsonparse.parse_object(raw, MAX_HEADER_DEPTH)
    if value is not None:
        return value
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = None if offset is None else offset + exc.start
        raise HeaderError(f"header is not UTF-8 text: {exc.reason}", path=path, offset=bad) from None
    # Before parsing: a header of a million ``[`` must never reach the recursive parser.
    if _jsonparse.nesting_depth(raw) > MAX_HEADER_DEPTH:
        raise HeaderError(
            f"header JSON is nested deeper than {MAX_HEADER_DEPTH} levels", path=path, offset=offset
        )
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        bad = None if offset is None else offset + len(text[: exc.pos].encode("utf-8"))
        raise HeaderError(f"header is not valid JSON: {exc.msg}", path=path, offset=bad) from None
    except (ValueError, RecursionError) as exc:
        raise HeaderError(f"header is not valid JSON: {exc}", path=path, offset=offset) from None
    if not isinstance(value, dict):
        raise HeaderError(
            f"header JSON must be an object, not {type(value).__name__}", path=path, offset=offset
        )
    try:
        # Lone surrogates (from "\ud800" escapes) parse fine but cannot be written back
        # out as UTF-8 (Arrow metadata, Parquet): reject them here, where we can say why.
        # Only text with such an escape can hold one; skip re-encoding megabytes otherwise.
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HeaderError(
            "header JSON contains a lone UTF-16 surrogate", path=path, offset=offset
        ) from None
    return value


def read_exact(f: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads (pipes, remote files)."""
    first = f.read(n)
    if len(first) == n or not first:  # the usual case: one read
        return first
    chunks = [first]
    remaining = n - len(first)
    while remaining > 0:
        chunk = f.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_preamble(
    f: BinaryIO,
    *,
    magic: bytes,
    file_size: int,
    path: str | os.PathLike[str] | None = None,
    format_label: str,
) -> tuple[dict[str, Any], int]:
    """Read ``magic | u32 length | JSON`` from the start of ``f``.

    Returns the parsed header and the byte offset of the first record. The declared
    length is checked against ``file_size`` *before* anything is allocated, so a damaged
    length field cannot make bindf reserve gigabytes. A file that ends inside the length
    field or before the declared end raises :class:`TruncatedHeaderError` (offset: the
    length field), a complete header that is not a JSON object :class:`HeaderError`.
    """
    head = read_exact(f, len(magic) + 4)
    if len(head) < len(magic) or head[: len(magic)] != magic:
        raise_bad_magic(head, magic=magic, path=path, format_label=format_label)
    if len(head) < len(magic) + 4:
        raise TruncatedHeaderError(
            f"{format_label} file ends inside the header length field",
            path=path,
            offset=len(magic),
        )
    (length,) = _U32.unpack_from(head, len(magic))
    json_start = len(magic) + 4
    available = file_size - json_start
    if length > available:
        whole = _whole_json_object(read_exact(f, min(max(available, 0), _LENGTH_PROBE_BYTES)))
        if whole is not None:
            raise HeaderError(
                f"{format_label} header declares {length} bytes of JSON, more than the "
                f"{available} that follow, but a whole JSON header of {whole} bytes is "
                "followed by records (a damaged length field)",
                path=path,
                offset=len(magic),
            )
        raise TruncatedHeaderError(
            f"{format_label} header declares {length} bytes of JSON but only "
            f"{max(available, 0)} bytes follow",
            path=path,
            offset=len(magic),
        )
    raw = read_exact(f, length)
    if len(raw) < length:  # the file shrank after we measured it
        raise TruncatedHeaderError(
            f"{format_label} file ends inside its JSON header", path=path, offset=json_start + len(raw)
        )
    return parse_json_header(raw, path=path, offset=json_start), json_start + length


#: Bytes after a header length field that runs past the end of the file looked at to
#: tell a cut header from a damaged length (headers are a few KB).
_LENGTH_PROBE_BYTES = 1 << 20


def _whole_json_object(data: bytes) -> int | None:
    """The size of a whole JSON object at the start of ``data`` that bytes other than
    whitespace follow (records after a complete header), else None: a header still being
    written (or cut) ends inside its object, or in its padding."""
    # (surrogateescape: the records after the object are bytes that are not UTF-8)
    text = data.decode("utf-8", "surrogateescape")
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):
        # (RecursionError: cut text nested deeper than Python recurses, such as a
        # million ``[``; no header bindf accepts is that deep, so it is not one.)
        return None
    size = len(text[:end].encode("utf-8", "surrogateescape"))
    if not isinstance(value, dict) or not data[size:].strip(b" \t\r\n"):
        return None
    return size


def raise_bad_magic(
    head: bytes, *, magic: bytes, path: str | os.PathLike[str] | None, format_label: str
) -> None:
    from .errors import UnknownFormatError

    if not head:
        raise UnknownFormatError(f"file is empty, expected {format_label} data", path=path, offset=0)
    found = bytes(head[: len(magic)])
    raise UnknownFormatError(
        f"not {format_label} data: expected magic {magic!r}, found {found!r}", path=path, offset=0
    )


def positive_number(value: Any) -> float | None:
    """A header value as a float if it is a positive finite number, else None: not a
    bool, and not an integer too large for a float (JSON allows 10**400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and number > 0 else None
