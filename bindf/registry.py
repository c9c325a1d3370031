"""Which formats bindf knows, and how a file's format is detected.

A :class:`FormatSpec` is the only thing that names a format. Everything else is
generated from the registered specs: ``bindf.read_<name>``/``scan_<name>``/``write_<name>``,
``pd.read_<name>``, ``pl.read_<name>``/``scan_<name>``, ``bindf.dask.read_<name>``,
detection, the CLI, and the robustness and fuzz sweeps. Adding a built-in format means
one module under ``bindf/formats/`` plus one spec in :data:`BUILTIN`.

Three ways in:

* the built-in specs below;
* :func:`register_format` at run time;
* the entry-point group ``bindf.formats`` of an installed package: each entry point is
  named after its format and loads to a spec (or a callable returning one). Names are
  known without importing anything, so ``pd.read_<name>`` exists right after
  ``import bindf``; the plugin module is imported on first use. A plugin that fails to
  load gives a :class:`~bindf.errors.BindfWarning` naming it and is left out.

Detection order: magic bytes, then the file extension, then each format's cheap probe of
the first bytes.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._inputs import single_source
from ._params import Param, allowed_values, option, value_allowed
from ._source import Source
from ._warnings import warn
from .errors import BindfWarning, UnknownFormatError

if TYPE_CHECKING:
    from .formats._base import FormatReader

#: How many leading bytes detection looks at.
PROBE_BYTES = 4096

#: Entry-point group of third-party formats.
ENTRY_POINT_GROUP = "bindf.formats"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

#: The families of ``df.bindf`` analysis helpers (:mod:`bindf.analysis`, a module each)
#: that a format's frames may take (:attr:`FormatSpec.analysis`), and what the frames
#: must have for them.
ANALYSIS_FAMILIES = {
    "apx": "AstroPix hits: read_apx's columns and the header's readout_uid",
    "it02": "binned counts: time_ns, then ch1, ch2 … (counts), and the header's "
            "bin_width_micros",
    "spectro": "photon events: event, microtime_ns, macrotime_ns, channel, and the "
               "header's laser_period_ns",
    "fcs1": "correlation curves: read_fcs1's columns",
}
#: What ``bindf follow``'s status line may add for a format's frames
#: (:attr:`FormatSpec.live_totals`).
LIVE_TOTALS = {
    "time": "the last time stamp: the frame's first column of time_ns, timestamp, "
            "wall_timestamp, macrotime_ns, fpga_ts",
    "chips": "hits per chip (chip_id)",
    "channels": "the sum of each ch<N> column (counts)",
}

#: Names no format may take: ``read_<name>`` (or ``scan_``/``write_``) is one of bindf's
#: own functions (``read_header``, ``read_headers``, ``read_parquet``,
#: ``read_dataset``), which a format's generated function would replace.
RESERVED_NAMES = frozenset({"header", "headers", "parquet", "dataset"})


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a format (None: it can)."""
    if not _NAME.match(name):
        return ("must be lower case letters, digits and '_', starting with a letter "
                "(it becomes read_<name>)")
    if name in RESERVED_NAMES:
        return f"is reserved: bindf.read_{name} is one of bindf's own functions"
    return None


def _listed(what: str, values: Any, kind: type, example: Any) -> tuple[Any, ...]:
    """``values`` as a tuple of non-empty ``kind`` values; a ``TypeError`` for a single
    value given bare (``tuple(b"TOYR")`` would be four integers, ``tuple(".xyz")`` four
    letters) or a value of another type, a ``ValueError`` for an empty one."""
    if isinstance(values, (str, bytes, bytearray)):
        raise TypeError(f"{what} is a tuple ({what}=({example!r},)), not {values!r}")
    listed = tuple(values)
    for value in listed:
        if not isinstance(value, kind):
            raise TypeError(f"{what} holds {kind.__name__} values ({example!r}), not {value!r}")
        if not value:
            raise ValueError(f"{what} holds an empty value: every file would match it")
    return listed


def checked_options(options: Any) -> tuple[Param, ...]:
    """A format's declared options as a tuple; a ``TypeError`` for anything but the
    parameters that ``bindf._params.option(name, default, annotation, doc)`` makes (a
    name alone, ``options=["gain"]``, failed later with an ``AttributeError``)."""
    listed = (options,) if isinstance(options, (str, Param)) else tuple(options)
    for value in listed:
        if not isinstance(value, Param):
            raise TypeError(f"options holds the parameters that bindf._params.option(name, "
                            f"default, annotation, doc) makes, not {value!r}")
    return listed  # type: ignore[return-value]


def _load(target: Any) -> Any:
    """``"module:attribute"`` → the attribute (imported now); anything else as is."""
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class FormatSpec:
    """How to recognise one format, where its reader (and writer) live, and its options.

    ``reader`` and ``writer`` may be objects or ``"module:attribute"`` text, imported on
    first use (so that ``import bindf`` imports no format module).
    """

    name: str
    description: str
    #: The :class:`~bindf.formats._base.FormatReader` subclass, or ``"module:Class"``.
    reader: Any
    magics: tuple[bytes, ...] = ()
    extensions: tuple[str, ...] = ()
    #: ``probe(first_bytes, source)`` → True if the file looks like this format. Only
    #: consulted when neither magic nor extension decided.
    probe: Callable[[bytes, Source], bool] | None = field(default=None, compare=False)
    #: ``write(path, frame, header=None, *, overwrite=True, ...)``, or ``"module:function"``.
    writer: Any = None
    #: The format's own reader options (``level=`` …), shown in every generated signature.
    options: tuple[Param, ...] = ()
    #: False: no generated ``read_<name>`` (the format has its own front door, like
    #: ``read_records``) and never detected.
    public: bool = True
    #: ``sample() -> bytes``: a small valid file, for the robustness and fuzz sweeps
    #: (``"module:function"`` allowed).
    sample: Any = field(default=None, compare=False)
    #: The family of ``df.bindf`` analysis helpers its frames take (a key of
    #: :data:`ANALYSIS_FAMILIES`: its frames have that family's columns and header
    #: fields), or None: none.
    analysis: str | None = None
    #: What ``bindf follow``'s status line shows for it beside rows, rate and bytes
    #: (keys of :data:`LIVE_TOTALS`). Empty by default: what a column called ``ch1``
    #: means in a format is the format's to say (it may hold signed ADC samples).
    live_totals: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _name_problem(self.name)
        if problem:
            raise ValueError(f"format name {self.name!r} {problem}")
        object.__setattr__(self, "magics", _listed("magics", self.magics, bytes, b"TOYR"))
        extensions = _listed("extensions", self.extensions, str, ".toy")
        bad = [e for e in extensions if not (e.startswith(".") and len(e) > 1)]
        if bad:  # "bin" would never equal the ".bin" that os.path.splitext gives
            raise ValueError(f"extensions start with a dot ('.bin'), not {bad[0]!r}")
        object.__setattr__(self, "extensions", tuple(e.lower() for e in extensions))
        if self.probe is not None and not callable(self.probe):
            raise TypeError(f"probe must be a function of (first_bytes, source), not "
                            f"{self.probe!r}")
        object.__setattr__(self, "options", checked_options(self.options))
        if not (self.writer is None or isinstance(self.writer, str) or callable(self.writer)):
            raise TypeError(f"writer must be a function of (path, frame, header=None, *, "
                            f"overwrite=True), 'module:function' text or None, not "
                            f"{self.writer!r}")
        if self.analysis is not None and self.analysis not in ANALYSIS_FAMILIES:
            raise ValueError(f"analysis is one of {sorted(ANALYSIS_FAMILIES)} or None, "
                             f"not {self.analysis!r}")
        live_totals = _listed("live_totals", self.live_totals, str, "time")
        unknown = [t for t in live_totals if t not in LIVE_TOTALS]
        if unknown:
            raise ValueError(f"live_totals holds some of {list(LIVE_TOTALS)}, not {unknown[0]!r}")
        object.__setattr__(self, "live_totals", live_totals)

    def reader_class(self) -> type[FormatReader]:
        return _load(self.reader)

    def writer_function(self) -> Callable[..., Any] | None:
        return _load(self.writer)

    def sample_bytes(self) -> bytes | None:
        make = _load(self.sample)
        return None if make is None else make()


def _probe_apx_log(head: bytes, source: Source) -> bool:
    from .formats.apx_log import looks_like_apx_log

    return looks_like_apx_log(head, source)


def _probe_legacy_spectro(head: bytes, source: Source) -> bool:
    from .formats.spectro import looks_like_legacy_spectro

    return looks_like_legacy_spectro(head, source)


def _probe_astep(head: bytes, source: Source) -> bool:
    from .formats.astep import looks_like_astep

    return looks_like_astep(head, source)


_LEVEL = option("level", "hits", 'Literal["hits", "readouts"]',
                'One row per hit (``"hits"``) or per readout (``"readouts"``).')
_STITCH = option("stitch", None, "bool | None",
                 "AstroPix 3: complete hits cut at a readout's end from the next readout "
                 "(default False, as upstream). AstroPix 4 always does; False is refused.")

BUILTIN: tuple[FormatSpec, ...] = (
    FormatSpec(
        "apx", "AstroPix binary run (.apx: AstroPix 4 and 3)", "bindf.formats.apx:ApxReader",
        magics=(b"%APXDF",), extensions=(".apx",), writer="bindf.formats._apx_writer:write_apx",
        analysis="apx", live_totals=("time", "chips"),
        options=(
            _LEVEL,
            _STITCH,
            option("chunk_bytes", 1 << 20, "int", "Upper bound of one read, in bytes."),
        ),
    ),
    FormatSpec(
        "apx_log", "legacy AstroPix text log (.log: AstroPix 4 and 3)", "bindf.formats.apx_log:ApxLogReader",
        extensions=(".log",), probe=_probe_apx_log, options=(_LEVEL, _STITCH),
        # read_apx's columns and header readout_uid: AstroPix's helpers
        analysis="apx", live_totals=("time", "chips"),
    ),
    FormatSpec(
        "it02", "FLIM LABS intensity tracing (IT02)", "bindf.formats.it02:IT02Reader",
        magics=(b"IT02",), writer="bindf.formats._it02_writer:write_it02",
        analysis="it02", live_totals=("time", "channels"),
        options=(
            option("layout", None, 'Literal["dense", "sparse"] | None',
                   "Force the record layout (default: detected)."),
            option("fill_gaps", False, "bool",
                   "Every bin from the first to the last, zeros included."),
        ),
    ),
    FormatSpec(
        "spectro", "FLIM LABS spectroscopy photon events (STT1 or legacy raw output)",
        "bindf.formats.spectro:SpectroReader", magics=(b"STT1",), probe=_probe_legacy_spectro,
        writer="bindf.formats.spectro:write_spectro", analysis="spectro", live_totals=("time",),
        options=(option("container", None, 'Literal["stt1", "legacy"] | None',
                        "Force the container (default: STT1 magic, else legacy)."),),
    ),
    FormatSpec(
        "sp01", "FLIM LABS spectroscopy decay curves (SP01)", "bindf.formats.sp01:SP01Reader",
        magics=(b"SP01",), writer="bindf.formats.sp01:write_sp01", live_totals=("time",),
        options=(option("shape", "tidy", 'Literal["tidy", "long", "wide"]',
                        "One row per record × channel × bin (tidy) or per record (wide)."),),
    ),
    FormatSpec(
        "spf1", "FLIM LABS spectroscopy phasors (SPF1)", "bindf.formats.spf1:SPF1Reader",
        magics=(b"SPF1",), writer="bindf.formats.spf1:write_spf1", live_totals=("time",),
    ),
    # No magic and often a .bin extension shared with FLIM LABS files: detected only by
    # its probe (a long consistent run of frames), never by extension.
    FormatSpec(
        "astep", "A-STEP firmware layer-frame stream (.bin, no magic)",
        "bindf.formats.astep:AstepReader", probe=_probe_astep,
        writer="bindf.formats._astep_writer:write_astep", sample="bindf.formats.astep:sample_file",
        live_totals=("time", "chips"),
        options=(
            option("ts_order", "auto", 'Literal["auto", "little", "big"]',
                   "FPGA timestamp byte order; auto: fewer decreasing steps (in the header)."),
            option("ts_bytes", None, "Literal[2, 4, 6, 8] | None",
                   "Timestamp width; None accepts every width the firmware writes."),
            option("chip", "auto", 'Literal["auto", 3, 4]',
                   "Chip generation (fixes the columns); auto: the more frequent payload."),
            option("v3_tick_ns", 10, "float", "AstroPix 3 ToT clock period, ns."),
            option("v4_tick_ns", 25, "float", "AstroPix 4 timestamp unit, ns."),
            option("tot_mode", "firmware", 'Literal["firmware", "modular", "apx"]',
                   "AstroPix 4 ToT: the firmware's rule (exact), modulo 2**18, or read_apx's."),
            option("chunk_bytes", 2 << 20, "int", "Upper bound of one read, in bytes."),
        ),
    ),
    FormatSpec(
        "itt1", "FLIM LABS intensity time tagger events (ITT1)",
        "bindf.formats.itt1:ITT1Reader", magics=(b"ITT1",),
        writer="bindf.formats.itt1:write_itt1", sample="bindf.formats.itt1:sample",
        live_totals=("time",),  # no microtime_ns: the decay histogram does not apply
    ),
    FormatSpec(
        "fcs1", "FLIM LABS FCS correlation curves G(tau) (FCS1)",
        "bindf.formats.fcs1:FCS1Reader", magics=(b"FCS1",),
        writer="bindf.formats.fcs1:write_fcs1", sample="bindf.formats.fcs1:sample",
        analysis="fcs1",
    ),
    FormatSpec(
        "it01", "FLIM LABS intensity tracing, first version (IT01, 2024)",
        "bindf.formats.it01:IT01Reader", magics=(b"IT01",),
        writer="bindf.formats.it01:write_it01", sample="bindf.formats.it01:sample",
        # IT02's columns (time_ns, ch{c+1}) and bin_width_micros: IT02's helpers
        analysis="it02", live_totals=("time", "channels"),
        options=(option("slots", False, "bool",
                        "Return the 8 raw counter slots ``slot_0 … slot_7`` instead of one "
                        "``ch{c+1}`` column per enabled channel."),),
    ),
    # Never detected (no magic): used through bindf.read_records(path, dtype=...). Its
    # options are declared for what checks a format's options by name (bindf.follow,
    # the CLI's --option); bindf.read_records documents them.
    FormatSpec("records", "any fixed-size records described by a numpy dtype",
               "bindf.formats.records:RecordsReader", public=False,
               options=(
                   option("dtype", None, "Any", "The record dtype, or a callable of the header."),
                   option("offset", None, "Any", "Byte offset of the first record."),
                   option("header", None, "Any", "Structured dtype of a header at offset 0."),
                   option("count", -1, "Any", "Number of records (-1: as many as there are)."),
                   option("subarrays", "flatten", 'Literal["flatten", "list"]',
                          "How a field of shape (k,) becomes columns."),
                   option("memmap", False, "bool", "np.memmap views instead of reads."),
               )),
)

#: name → spec of every registered format, in registration order.
_BY_NAME: dict[str, FormatSpec] = {spec.name: spec for spec in BUILTIN}
#: name → position in the order formats were declared (built-ins, then each plugin
#: when its entry point was found or it was registered): detection's tie-break between
#: equally long magics, whichever plugins happen to be loaded yet.
_DECLARED: dict[str, int] = {spec.name: i for i, spec in enumerate(BUILTIN)}
#: Plugins named by an entry point whose spec was not loaded yet: name → entry point.
_PENDING: dict[str, Any] = {}
#: Plugins that failed to load: name → why (raised when the format is asked for by name).
_FAILED: dict[str, str] = {}
#: Entry points already declared: name → "module:attribute".
_SEEN_ENTRY_POINTS: dict[str, str] = {}
#: Names given a spec by :func:`register_format` (built-in and plugin names replaced
#: so included): other processes do not know them (see :func:`spec_for_workers`).
_REGISTERED_AT_RUN_TIME: set[str] = set()
#: Held while a plugin is imported: threads that use it at once (a thread pool over
#: files, a dask worker's threads) wait for the one import instead of finding the name
#: neither pending nor loaded. Reentrant: a plugin's module may use bindf as it loads.
_LOADING = threading.RLock()
#: The plugins being imported (by the thread holding :data:`_LOADING`).
_IMPORTING: set[str] = set()
#: Specs sent by another process that this one registered: name → token (see
#: :func:`known_in_this_process`).
_ADOPTED: dict[str, str] = {}


def _new_loading_lock() -> None:
    global _LOADING
    _LOADING = threading.RLock()  # (a fork while another thread held it: not held here)
    _IMPORTING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_loading_lock)
#: Called with each newly registered spec (``bindf`` adds its functions there).
_LISTENERS: list[Callable[[FormatSpec], None]] = []


def __getattr__(name: str) -> Any:
    # FORMATS stays a tuple of every known spec, current after later registrations.
    if name == "FORMATS":
        return tuple(_specs())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_format(spec: FormatSpec, *, replace: bool = False) -> FormatSpec:
    """Add ``spec`` to the registry; ``bindf.read_<name>``, ``scan_<name>``,
    ``write_<name>``, ``pd.read_<name>``, ``pl.read_<name>``/``scan_<name>`` and
    ``bindf.dask.read_<name>`` appear at once, and detection considers it.

    A name that is already registered (a built-in above all) is refused with a
    ``ValueError`` unless ``replace=True``. Returns ``spec``.
    """
    if not isinstance(spec, FormatSpec):
        raise TypeError(f"register_format takes a FormatSpec, not {type(spec).__name__}")
    if spec.name == "records":  # its reader serves bindf.read_records(path, dtype=...)
        raise ValueError("format name 'records' is reserved: bindf.read_records is one of "
                         "bindf's own functions")
    known = spec.name in _BY_NAME or spec.name in _PENDING
    if known and not replace:
        raise ValueError(
            f"a format called {spec.name!r} is already registered"
            + (" (a bindf built-in)" if _is_builtin(spec.name) else "")
            + "; pass replace=True to replace it")
    _PENDING.pop(spec.name, None)
    _FAILED.pop(spec.name, None)
    _BY_NAME[spec.name] = spec
    _REGISTERED_AT_RUN_TIME.add(spec.name)
    _declare(spec.name)
    for listener in list(_LISTENERS):
        listener(spec)
    return spec


def discover_plugins() -> list[str]:
    """Declare the formats that installed packages name in the ``bindf.formats``
    entry-point group (their modules are not imported) and return the new names.

    ``import bindf`` calls it; call it again (as ``bindf.discover_plugins()``) after
    installing a plugin into a running interpreter. An entry point already seen is
    skipped; one whose name clashes with a registered format is ignored with a warning.
    """
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # noqa: BLE001 - broken metadata must not break import bindf
        warn(BindfWarning(f"cannot list bindf format plugins: {exc}"))
        return []
    names = []
    for entry in found:
        if _SEEN_ENTRY_POINTS.get(entry.name) == entry.value:
            continue
        problem = _name_problem(entry.name) or _taken_by(entry.name)
        if problem:
            warn(BindfWarning(
                f"format plugin {entry.name!r} ({entry.value}) is ignored: the name {problem}"))
            continue
        _SEEN_ENTRY_POINTS[entry.name] = entry.value
        _PENDING[entry.name] = entry
        _declare(entry.name)
        names.append(entry.name)
    return names


def _is_builtin(name: str) -> bool:
    return any(s.name == name for s in BUILTIN)


def _taken_by(name: str) -> str | None:
    """Why a plugin may not take ``name``: which format has it (None: free)."""
    if name in _PENDING:
        return f"is taken by the plugin {_PENDING[name].value}"
    if name not in _BY_NAME:
        return None
    if _is_builtin(name):
        return "is taken by a bindf built-in"
    if name in _SEEN_ENTRY_POINTS:
        return f"is taken by the plugin {_SEEN_ENTRY_POINTS[name]}"
    return "is taken by a format registered with bindf.register_format"


def _load_plugin(name: str) -> FormatSpec | None:
    """Import the plugin named ``name`` now; None (with a warning) if it is broken.
    The entry stays pending until the spec is registered (see :data:`_LOADING`)."""
    with _LOADING:
        # (loaded or failed in another thread meanwhile; or being imported by this one:
        # a plugin module that lists the formats as it loads does not load itself again)
        if name not in _PENDING or name in _IMPORTING:
            return _BY_NAME.get(name)
        _IMPORTING.add(name)
        try:
            return _import_plugin(name, _PENDING[name])
        finally:
            _IMPORTING.discard(name)


def _import_plugin(name: str, entry: Any) -> FormatSpec | None:
    try:
        spec = entry.load()
        if callable(spec) and not isinstance(spec, FormatSpec):
            spec = spec()
        if not isinstance(spec, FormatSpec):
            raise TypeError(f"it loads to a {type(spec).__name__}, not a bindf FormatSpec")
        if spec.name != name:
            raise ValueError(f"its spec is called {spec.name!r}, not {name!r}")
    # SystemExit too: a plugin module that calls sys.exit() at import must not end the
    # process that reads an unrelated file
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin is a warning
        why = (f"format plugin {name!r} ({entry.value}) failed to load: "
               f"{type(exc).__name__}: {exc}")
        _FAILED[name] = why
        _PENDING.pop(name, None)
        warn(BindfWarning(f"{why}; it is ignored"))
        return None
    if name in _PENDING:  # (else its module registered a spec as it loaded: that one)
        _BY_NAME[name] = spec
        _PENDING.pop(name)
    return _BY_NAME.get(name, spec)


def _declare(name: str) -> None:
    _DECLARED.setdefault(name, len(_DECLARED))


def _specs() -> list[FormatSpec]:
    """Every spec (plugins loaded), in the order they were declared."""
    for name in list(_PENDING):
        _load_plugin(name)
    return sorted(_BY_NAME.values(), key=lambda spec: _DECLARED.get(spec.name, len(_DECLARED)))


def format_names(*, public_only: bool = True) -> list[str]:
    """Names of every registered format and declared plugin, without loading plugins."""
    names = [s.name for s in _BY_NAME.values() if s.public or not public_only]
    return names + [n for n in _PENDING if n not in names]


def _specs_of(format: str | None) -> list[FormatSpec]:
    """``format``'s spec, or without one every spec (plugins loaded)."""
    return [get_format(format)] if format is not None else _specs()


def option_names(format: str | None = None) -> set[str]:
    """The names of ``format``'s own options, or of every format's (plugins loaded)."""
    return {param.name for spec in _specs_of(format) for param in spec.options}


def check_option_values(options: Mapping[str, Any], format: str | None = None) -> None:
    """A ``ValueError`` for an option value that no format taking the option allows
    (``level="bogus"``), told from the options' annotations where they list every value
    (``Literal[...]``, ``bool``); other values are the readers' to check. For a caller
    that must refuse before any file is read (``ingest``, whose failed files lose their
    parts; ``follow``, whose file may appear a minute later)."""
    specs = _specs_of(format)
    for name, value in options.items():
        taking = [(spec.name, param) for spec in specs for param in spec.options
                  if param.name == name]
        choices = [allowed_values(param.annotation) for _, param in taking]
        if not taking or any(c is None or value_allowed(value, c) for c in choices):
            continue
        listed = dict.fromkeys(v for c in choices if c is not None for v in c)
        formats = ", ".join(dict.fromkeys(spec_name for spec_name, _ in taking))
        raise ValueError(f"{name} must be one of {tuple(listed)!r} (format {formats}), "
                         f"not {value!r}")


@dataclass(frozen=True)
class SentSpec:
    """A format registered at run time, as :func:`spec_for_workers` sends it to another
    process: the spec, and which registration of the sender it is (``token``)."""

    spec: FormatSpec
    token: str

    def __dask_tokenize__(self) -> str:
        return self.token


def spec_for_workers(name: str) -> str | SentSpec:
    """How to name the format ``name`` to another process (a dask worker): its name when
    that process knows it too (a built-in, or a plugin it imports the same way), else
    the spec itself, for a format registered at run time (``register_format`` in a
    notebook or under ``if __name__ == "__main__"``, a built-in replaced so included),
    which no other process has, or has in another version."""
    spec = get_format(name)
    if any(spec is builtin for builtin in BUILTIN) or _SEEN_ENTRY_POINTS.get(name) and \
            name not in _REGISTERED_AT_RUN_TIME:
        return name
    # (the sender's process and the spec's identity in it: a spec registered again,
    # edited in a notebook, is another token, and long-lived workers take it up)
    return SentSpec(spec, f"{name}:{os.getpid()}:{id(spec)}")


def specs_for_workers() -> tuple[SentSpec, ...]:
    """Every format registered at run time in this process, as :func:`spec_for_workers`
    sends it: for work on other processes that may detect any format (an ingestion on
    a dask cluster), not only read one it names."""
    sent = (spec_for_workers(name) for name in sorted(_REGISTERED_AT_RUN_TIME)
            if name in _BY_NAME)
    return tuple(spec for spec in sent if isinstance(spec, SentSpec))


def known_in_this_process(format: str | SentSpec) -> str:
    """The name under which this process reads a format :func:`spec_for_workers` named:
    a sent spec is registered here, replacing what the name meant (a built-in, an older
    version), once per token; in the sender's own process it is already the one."""
    if isinstance(format, str):
        return format
    name = format.spec.name
    with _LOADING:  # (a worker's threads start their first partitions at once)
        if _ADOPTED.get(name) != format.token:
            if _BY_NAME.get(name) is not format.spec:
                register_format(format.spec, replace=True)
            _ADOPTED[name] = format.token
    return name


def registered_spec(name: str) -> FormatSpec | None:
    """The loaded spec called ``name``, or None (no plugin is imported for this)."""
    return _BY_NAME.get(name)


def list_formats() -> list[FormatSpec]:
    """Every registered format's spec (plugins are loaded for this)."""
    return _specs()


def get_format(name: str) -> FormatSpec:
    """The spec called ``name``; a ``ValueError`` otherwise, saying why a plugin of that
    name failed to load, or listing the known names (plugins included)."""
    if name in _PENDING:
        _load_plugin(name)
    spec = _BY_NAME.get(name)
    if spec is not None:
        return spec
    if name in _FAILED:
        raise ValueError(_FAILED[name])
    known = format_names()
    close = ([n for n in known if n == str(name).lower()]  # format="IT02", the magic
             or difflib.get_close_matches(str(name), known, n=1))
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown format {name!r}; {hint}bindf knows {sorted(known)}")


def detect_format(source: Any) -> FormatSpec:
    """The spec of ``source``'s format: by magic bytes, then extension, then probes.

    ``source`` is one input as :func:`bindf.read` takes it (a path or URL, not a glob; a
    file object; bytes); only its first bytes are read. An unrecognised file is an
    :class:`~bindf.errors.UnknownFormatError` listing the formats tried.
    """
    if not isinstance(source, Source):
        source = single_source(source)
    head = source.read_head(PROBE_BYTES)
    specs = [s for s in _specs() if s.public]
    # The longest magic that matches wins (a plugin for a newer revision may extend a
    # built-in's magic); between equally long ones, the first registered (built-ins).
    best: FormatSpec | None = None
    best_length = 0
    for spec in specs:
        length = max((len(m) for m in spec.magics if head.startswith(m)), default=0)
        if length > best_length:
            best, best_length = spec, length
    if best is not None:
        return best
    ext = os.path.splitext(source.uncompressed_name)[1].lower()
    by_ext = [spec for spec in specs if ext and ext in spec.extensions]
    if len(by_ext) == 1:
        return by_ext[0]
    for spec in specs:
        if spec.probe is not None and _probe_says(spec, head, source):
            return spec
    if not head:
        raise UnknownFormatError("file is empty", path=source.path, offset=0)
    raise UnknownFormatError(
        f"unrecognised file format (first bytes {head[:8]!r}); bindf reads: "
        + ", ".join(f"{s.name} ({s.description})" for s in specs),
        path=source.path,
        offset=0,
    )


def _probe_says(spec: FormatSpec, head: bytes, source: Source) -> bool:
    """What ``spec``'s probe says of a file; a probe that raises (a plugin's bug) is a
    warning naming its format and says no: one format must not stop the detection of
    every other format's files."""
    try:
        return bool(spec.probe(head, source))  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - whatever a plugin's code raises
        if spec.name not in _PROBES_FAILED:  # once (a glob would repeat it per file)
            _PROBES_FAILED.add(spec.name)
            warn(BindfWarning(f"the probe of format {spec.name!r} failed on this file "
                              f"({type(exc).__name__}: {exc}); files are taken as not "
                              "of that format (said once per process)", path=source.path))
        return False


#: Formats whose probe raised (warned once).
_PROBES_FAILED: set[str] = set()


def open_reader(
    source: Source, format: str | None = None, **options: object
) -> FormatReader:
    """Open ``source`` with the reader of ``format`` (detected when None; ``""`` names no
    format and is refused, as by every other entry point)."""
    if format is not None:
        spec = get_format(format)
        refuse_other_format(source, spec.name)
    else:
        spec = detect_format(source)
    return spec.reader_class()(source, **options)


def refuse_other_format(source: Source, name: str) -> None:
    """Raise :class:`~bindf.errors.UnknownFormatError` if ``source``, opened as format
    ``name`` (given, or the format of a multi-file read's first file), starts with
    another format's magic and not with one of its own.

    Only for the built-in formats that read files without a magic of their own (legacy
    spectroscopy, A-STEP, the text log): their readers would decode any bytes, so an
    IT02 run in a glob of legacy spectroscopy files became rows of garbage. Their own
    files begin with another format's magic only by a rare coincidence, which format
    detection (magic first) would already misread: A-STEP begins with a length byte of
    4 to 17, a log with text, legacy spectroscopy with an event byte (a channel, or a
    marker ``F``/``L``/``P``) and a double. Formats
    with a magic and no probe check their magic when they read the header. Only loaded
    formats are consulted: no plugin is imported for this."""
    spec = _BY_NAME.get(name)
    if spec not in BUILTIN or not spec.public or (spec.magics and spec.probe is None):
        # (a plugin's headerless format, or read_records, reads any bytes its user's
        # data may start with: not another format's magic)
        return
    loaded = [s for s in _BY_NAME.values() if s.public and s is not spec]  # no plugin import
    others = [m for s in loaded for m in s.magics]
    if not others:
        return
    head = source.read_head(max(len(m) for m in (*others, *spec.magics)))
    if any(head.startswith(m) for m in spec.magics):
        return
    length, other = max(((len(m), s) for s in loaded for m in s.magics if head.startswith(m)),
                        key=lambda found: found[0], default=(0, None))
    if other is not None:
        raise UnknownFormatError(
            f"this file is of format {other.name!r} ({other.description}; it starts with "
            f"{head[:length]!r}), not {spec.name!r}; read it with format={other.name!r}",
            path=source.path, offset=0)
