"""What the fuzz targets feed the readers and which outcomes they accept.

Shared by the atheris targets (``fuzz_<target>.py``, through ``_harness.py``) and by
``tests/test_fuzz_regressions.py``, which replays the inputs they found without atheris.

An input is one configuration byte (``data[0] % len(CONFIGS[target])``) followed by the
file. Allowed outcomes, as in ``tests/test_robustness.py``: a table with no more rows
than the file's size allows, a :class:`~bindf.errors.BindfError` naming the file and a
byte offset, :class:`~bindf.errors.BindfWarning` s. Anything else — another exception,
any other warning — is a :class:`Finding`.
"""

from __future__ import annotations

import warnings
from typing import Any

import pyarrow as pa

import bindf
from bindf._source import Source
from bindf.errors import BindfError, BindfWarning
from bindf.registry import open_reader

#: (options of the read, minimum bytes of file per row; 0: no row check)
Config = tuple[dict[str, Any], int]

CONFIGS: dict[str, list[Config]] = {
    "apx": [
        ({"format": "apx", "threads": False}, 8),
        ({"format": "apx", "threads": False, "level": "readouts"}, 19),
        ({"format": "apx", "threads": False, "chunk_bytes": 32}, 8),
        ({"format": "apx", "threads": False, "on_error": "skip"}, 8),
        ({"format": "apx", "threads": False, "on_error": "skip", "level": "readouts"}, 19),
        ({"format": "apx", "threads": True}, 8),
        # AstroPix 3 runs (readout_uid 3000, 5-byte hits) are seeds of this target too
        ({"format": "apx", "threads": False, "stitch": True}, 5),
        ({"format": None}, 0),  # detection, through bindf.read
    ],
    "apx_log": [
        ({"format": "apx_log"}, 16),
        ({"format": "apx_log", "level": "readouts"}, 0),
        ({"format": "apx_log", "on_error": "skip"}, 16),
        ({"format": "apx_log", "on_error": "skip", "level": "readouts"}, 0),
        ({"format": None}, 0),  # detection (by the .log extension)
    ],
    "it02": [
        ({"format": "it02"}, 9),
        ({"format": "it02", "layout": "sparse"}, 9),
        ({"format": "it02", "layout": "dense"}, 12),
        ({"format": "it02", "layout": "sparse", "on_error": "skip"}, 9),
        # fill_gaps makes one row per bin from the first record to the last: as many as
        # the times say, not the file size (documented), so n_rows bounds the output.
        ({"format": "it02", "fill_gaps": True, "n_rows": 100_000}, 0),
        ({"format": "it02", "fill_gaps": True, "on_error": "skip", "n_rows": 100_000}, 0),
        ({"format": None}, 0),
    ],
    "spectro": [
        ({"format": "spectro"}, 17),
        ({"format": "spectro", "container": "legacy"}, 17),
        ({"format": "spectro", "container": "stt1"}, 17),
        ({"format": None}, 0),
    ],
    "sp01": [
        ({"format": "sp01"}, 4),
        ({"format": "sp01", "shape": "wide"}, 1032),
        ({"format": None}, 0),
    ],
    "spf1": [
        ({"format": "spf1"}, 32),
        ({"format": None}, 0),
    ],
    "astep": [
        ({"format": "astep", "threads": False}, 5),  # smallest frame: 5 bytes
        ({"format": "astep", "threads": False, "chip": 4, "tot_mode": "apx"}, 5),
        ({"format": "astep", "threads": False, "on_error": "skip", "ts_order": "big"}, 5),
        ({"format": "astep", "threads": False, "ts_bytes": 8, "chunk_bytes": 32}, 5),
        ({"format": "astep", "threads": True}, 5),
        ({"format": None}, 0),  # detection by the probe
    ],
    "itt1": [
        ({"format": "itt1"}, 9),
        ({"format": None}, 0),
    ],
    "it01": [
        ({"format": "it01"}, 40),
        ({"format": "it01", "slots": True}, 40),
        ({"format": None}, 0),
    ],
    # every row is one G value of the JSON text, at least two bytes ("0,")
    "fcs1": [
        ({"format": "fcs1"}, 2),
        ({"format": "fcs1", "on_error": "skip"}, 2),
        ({"format": None}, 0),
    ],
}

#: File name suffix per target (detection looks at the extension).
SUFFIX = {"apx": ".apx", "apx_log": ".log"}


def targets() -> list[str]:
    """Every reader target: one per registered format (built-ins, plugins, run-time
    registrations), so a new format is fuzzed without editing this file."""
    return [spec.name for spec in bindf.list_formats() if spec.public]


def configs_for(target: str) -> list[Config]:
    """The configurations of ``target``: :data:`CONFIGS`, or for a format without
    hand-written ones its default read and detection."""
    return CONFIGS.get(target) or [({"format": target}, 0), ({"format": None}, 0)]


def suffix_for(target: str) -> str:
    """The file suffix that lets detection find ``target`` (its extension when it has
    no magic)."""
    if target in SUFFIX:
        return SUFFIX[target]
    spec = bindf.get_format(target)
    return spec.extensions[0] if spec.extensions and not spec.magics else ".bin"


class Finding(AssertionError):
    """An outcome the robustness contract does not allow."""


def read_table(path: str, options: dict[str, Any]) -> pa.Table:
    """The format's reader directly (twice as many runs per second as the frontend), or
    ``bindf.read`` when the format is to be detected."""
    options = dict(options)
    fmt = options.pop("format")
    if fmt is None:
        return bindf.read(path, output="arrow", **options)
    n_rows = options.pop("n_rows", None)
    reader = open_reader(Source(path), fmt, **options)
    return pa.Table.from_batches(list(reader.iter_batches(n_rows=n_rows)), schema=reader.schema)


def check_input(target: str, data: bytes, path: str) -> str:
    """Write ``data[1:]`` to ``path``, read it with the configuration ``data[0]`` picks;
    raise :class:`Finding` unless the outcome is allowed. Returns "ok" or "error"."""
    configs = configs_for(target)
    options, bytes_per_row = configs[data[0] % len(configs)] if data else configs[0]
    body = data[1:]
    with open(path, "wb") as f:
        f.write(body)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", BindfWarning)
        try:
            table = read_table(path, options)
        except BindfError as exc:
            if exc.offset is None or exc.path != path:
                raise Finding(f"error without offset or path: {exc!r}") from exc
            return "error"
    if bytes_per_row and table.num_rows * bytes_per_row > len(body):
        raise Finding(f"{table.num_rows} rows from {len(body)} bytes")
    return "ok"
