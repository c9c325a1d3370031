"""Which formats bindf knows, and how a file's format is detected.

Detection order: magic bytes, then the file extension, then each format's cheap probe of
the first bytes. :data:`FORMATS` is the one place that lists them all: adding a format
means one module under ``bindf/formats/`` plus one line here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._source import Source
from .errors import UnknownFormatError

if TYPE_CHECKING:
    from .formats._base import FormatReader

#: How many leading bytes detection looks at.
PROBE_BYTES = 4096


@dataclass(frozen=True)
class FormatSpec:
    """How to recognise one format and where its reader lives."""

    name: str
    description: str
    #: ``"module:Class"`` of the :class:`~bindf.formats._base.FormatReader`, imported lazily.
    reader: str
    magics: tuple[bytes, ...] = ()
    extensions: tuple[str, ...] = ()
    #: ``probe(first_bytes, source)`` → True if the file looks like this format. Only
    #: consulted when neither magic nor extension decided.
    probe: Callable[[bytes, Source], bool] | None = field(default=None, compare=False)

    def reader_class(self) -> type[FormatReader]:
        module_name, _, class_name = self.reader.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, class_name)


def _probe_apx_log(head: bytes, source: Source) -> bool:
    from .formats.apx_log import looks_like_apx_log

    return looks_like_apx_log(head, source)


def _probe_legacy_spectro(head: bytes, source: Source) -> bool:
    from .formats.spectro import looks_like_legacy_spectro

    return looks_like_legacy_spectro(head, source)


FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec(
        "apx",
        "AstroPix binary run (.apx)",
        "bindf.formats.apx:ApxReader",
        magics=(b"%APXDF",),
        extensions=(".apx",),
    ),
    FormatSpec(
        "apx_log",
        "legacy AstroPix text log (.log)",
        "bindf.formats.apx_log:ApxLogReader",
        extensions=(".log",),
        probe=_probe_apx_log,
    ),
    FormatSpec(
        "it02",
        "FLIM LABS intensity tracing (IT02)",
        "bindf.formats.it02:IT02Reader",
        magics=(b"IT02",),
    ),
    FormatSpec(
        "spectro",
        "FLIM LABS spectroscopy photon events (STT1 or legacy raw output)",
        "bindf.formats.spectro:SpectroReader",
        magics=(b"STT1",),
        probe=_probe_legacy_spectro,
    ),
    FormatSpec("sp01", "FLIM LABS spectroscopy decay curves (SP01)", "bindf.formats.sp01:SP01Reader", magics=(b"SP01",)),
    # Never detected (no magic): used through bindf.read_records(path, dtype=...).
    FormatSpec("records", "any fixed-size records described by a numpy dtype",
               "bindf.formats.records:RecordsReader"),
    FormatSpec("spf1", "FLIM LABS spectroscopy phasors (SPF1)", "bindf.formats.spf1:SPF1Reader", magics=(b"SPF1",)),
)

_BY_NAME = {spec.name: spec for spec in FORMATS}


def get_format(name: str) -> FormatSpec:
    """The spec called ``name`` (``ValueError`` listing the known names otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; bindf knows {sorted(_BY_NAME)}") from None


def detect_format(source: Source) -> FormatSpec:
    """Detect the format of ``source``: magic bytes, then extension, then probes."""
    head = source.read_head(PROBE_BYTES)
    for spec in FORMATS:
        if any(head.startswith(m) for m in spec.magics):
            return spec
    ext = os.path.splitext(source.path)[1].lower()
    by_ext = [spec for spec in FORMATS if ext and ext in spec.extensions]
    if len(by_ext) == 1:
        return by_ext[0]
    for spec in FORMATS:
        if spec.probe is not None and spec.probe(head, source):
            return spec
    if not head:
        raise UnknownFormatError("file is empty", path=source.path, offset=0)
    raise UnknownFormatError(
        f"unrecognised file format (first bytes {head[:8]!r}); bindf reads: "
        + ", ".join(f"{s.name} ({s.description})" for s in FORMATS),
        path=source.path,
        offset=0,
    )


def open_reader(
    source: Source, format: str | None = None, **options: object
) -> FormatReader:
    """Open ``source`` with the reader of ``format`` (detected when None)."""
    spec = get_format(format) if format else detect_format(source)
    return spec.reader_class()(source, **options)
