"""Strict parsing of the JSON headers that FLIM LABS and AstroPix files carry.

Every format here stores ``magic | u32 length | JSON text``. The JSON is parsed with the
standard-library parser (never ``eval``) and held to a stricter standard than
``json.loads`` applies by default, because a header that is *almost* JSON is a sign of a
damaged file and guessing would silently change the user's metadata:

* the text must be UTF-8 and the top level an object;
* duplicate keys, ``NaN``/``Infinity`` and lone UTF-16 surrogates are rejected;
* nesting deeper than :data:`MAX_HEADER_DEPTH` is rejected (CPython would otherwise raise
  ``RecursionError``, which is not a ``ValueError``).
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Any, BinaryIO

import numpy as np

from .errors import HeaderError

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


#: One strict decoder for every header (``json.loads`` with hooks builds a new one per call).
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates,
                            parse_constant=_reject_constant)


def _nesting_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Cheap pre-check of bracket depth, ignoring brackets inside strings.

    Runs before ``json.loads`` so that a header of a million ``[`` never reaches the
    recursive parser at all. Works on the UTF-8 bytes, vectorised: every byte of a
    multi-byte UTF-8 character is >= 0x80, so none is taken for a quote, backslash or
    bracket. (FCS1 files carry megabytes of JSON arrays: no loop per byte.)
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the usual case
        return False
    data = np.frombuffer(raw, dtype=np.uint8)
    # Quotes, backslashes and brackets are few next to the other bytes (digits of
    # megabytes of numbers): work on their positions only.
    quotes = np.flatnonzero(data == 0x22)
    backslashes = np.flatnonzero(data == 0x5C)
    if len(backslashes) and len(quotes):
        # A quote is escaped when an odd number of backslashes directly precedes it.
        run_start = np.ones(len(backslashes), dtype=bool)
        run_start[1:] = np.diff(backslashes) != 1
        first_of_run = backslashes[np.maximum.accumulate(
            np.where(run_start, np.arange(len(backslashes)), 0))]
        before = np.maximum(np.searchsorted(backslashes, quotes) - 1, 0)
        touching = backslashes[before] == quotes - 1
        run = np.where(touching, quotes - first_of_run[before], 0)
        quotes = quotes[run % 2 == 0]
    brackets = np.flatnonzero((data == 0x5B) | (data == 0x7B) | (data == 0x5D) | (data == 0x7D))
    # A bracket is inside a string when an odd number of real quotes precede it.
    outside = np.searchsorted(quotes, brackets) % 2 == 0
    kinds = data[brackets[outside]]
    steps = np.where((kinds == 0x5B) | (kinds == 0x7B), 1, -1).astype(np.int32)
    return bool(np.cumsum(steps).max(initial=0) > limit)


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
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = None if offset is None else offset + exc.start
        raise HeaderError(f"header is not UTF-8 text: {exc.reason}", path=path, offset=bad) from None
    if _nesting_depth_exceeds(bytes(raw), MAX_HEADER_DEPTH):
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
    length field cannot make bindf reserve gigabytes.
    """
    head = read_exact(f, len(magic) + 4)
    if len(head) < len(magic) or head[: len(magic)] != magic:
        raise_bad_magic(head, magic=magic, path=path, format_label=format_label)
    if len(head) < len(magic) + 4:
        raise HeaderError(
            f"{format_label} file ends inside the header length field",
            path=path,
            offset=len(magic),
        )
    (length,) = _U32.unpack_from(head, len(magic))
    json_start = len(magic) + 4
    available = file_size - json_start
    if length > available:
        raise HeaderError(
            f"{format_label} header declares {length} bytes of JSON but only "
            f"{max(available, 0)} bytes follow",
            path=path,
            offset=len(magic),
        )
    raw = read_exact(f, length)
    if len(raw) < length:  # the file shrank after we measured it
        raise HeaderError(
            f"{format_label} file ends inside its JSON header", path=path, offset=json_start + len(raw)
        )
    return parse_json_header(raw, path=path, offset=json_start), json_start + length


def raise_bad_magic(
    head: bytes, *, magic: bytes, path: str | os.PathLike[str] | None, format_label: str
) -> None:
    from .errors import UnknownFormatError

    if not head:
        raise UnknownFormatError(f"file is empty, expected a {format_label} file", path=path, offset=0)
    found = bytes(head[: len(magic)])
    raise UnknownFormatError(
        f"not a {format_label} file: expected magic {magic!r}, found {found!r}", path=path, offset=0
    )
