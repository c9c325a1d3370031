"""One small file of every format bindf reads, for tests that must cover them all
(sources, dtype_backend, bindf.open): the bundled samples plus files made with bindf's
own writers (sparse IT02), the AstroPix test run turned into a legacy log, a legacy
spectroscopy raw output, a generic fixed-record file, and one file of each format the
tests add from outside (``tests/example_formats.py``: an entry-point plugin, a
run-time registration, a headerless format found by its extension)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

import bindf

SAMPLES = resources.files("bindf") / "samples"
#: A generic fixed-record layout: 16-byte header, then (name, time, value) records.
RECORD_HEADER = np.dtype([("magic", "S8"), ("count", "<u8")])
RECORD_DTYPE = np.dtype([("name", "S4"), ("time", "<i8"), ("value", "<f4")])


@dataclass(frozen=True)
class Case:
    """One file and the keyword arguments that read it."""

    id: str
    path: Path
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Columns that bindf can project (a strict subset of the schema, in schema order).
    projection: tuple[str, ...] = ()


def _sample(name: str, directory: Path) -> Path:
    target = directory / name
    target.write_bytes((SAMPLES / name).read_bytes())
    return target


def _apx_log(apx: Path, directory: Path) -> Path:
    """The readouts of an .apx file written as a legacy AstroPix text log."""
    import struct

    data = apx.read_bytes()
    position = 10 + struct.unpack_from("<I", data, 6)[0]
    lines = []
    while position < len(data):
        _marker, readout_id, _timestamp, length = struct.unpack_from("<3sIQI", data, position)
        payload = data[position + 19 : position + 19 + length]
        lines.append(f"{readout_id}\t b'{payload.hex()}'\n")
        position += 19 + length
    path = directory / "run.log"
    path.write_text("Namespace(name='run1', threshold=100.0)\n" + "".join(lines))
    return path


def _legacy_spectro(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    records = np.zeros(300, dtype=[("event", "u1"), ("micro", "<f8"), ("macro", "<f8")])
    records["event"] = rng.choice([0, 1, 2, 3, 76], size=len(records))
    records["micro"] = rng.random(len(records)) * 25.0
    records["macro"] = np.cumsum(rng.random(len(records)) * 10.0)
    path = directory / "spectroscopy-output-1.bin"
    path.write_bytes(records.tobytes())
    return path


def _records(directory: Path) -> Path:
    n = 500
    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["name"] = [f"r{i % 97}".encode() for i in range(n)]
    records["time"] = np.arange(n, dtype=np.int64) * 1_000_000_007
    records["value"] = np.linspace(-1, 1, n, dtype=np.float32)
    header = np.array([(b"RECS0001", n)], dtype=RECORD_HEADER)
    path = directory / "records.dat"
    path.write_bytes(header.tobytes() + records.tobytes())
    return path


def _plugin_files(directory: Path) -> dict[str, Path]:
    """A file of each format added by tests/example_formats.py, written by its own
    generic writer."""
    n = np.arange(700)
    frames = {
        "tpl": ({"t_ns": n * 1.5, "ch1": n % 7, "ch3": n * 3}, {"channels": [0, 2]}, ".tpl"),
        "stamp": ({"t": n * 10, "value": n - 100}, {"scale": 4, "spare": 0}, ".bin"),
        "raw16": ({"a": n, "b": n / 4, "c": -n % 300, "d": n % 60000}, None, ".r16"),
    }
    paths = {}
    for name, (frame, header, suffix) in frames.items():
        paths[name] = directory / f"{name}{suffix}"
        getattr(bindf, f"write_{name}")(paths[name], frame, header)
    return paths


#: Case ids of the formats the tests add (conftest.py parametrises over all cases).
PLUGIN_CASES = ("tpl", "stamp", "raw16")


def make_cases(directory: Path) -> list[Case]:
    """Write every case's file into ``directory``."""
    apx = _sample("astropix_threshold_scan.apx", directory)
    it02 = _sample("intensity_tracing_it02.bin", directory)
    sparse = directory / "it02_sparse.bin"
    dense = bindf.read_it02(it02)
    bindf.write_it02(sparse, dense, dense.attrs["bindf"]["header"], layout="sparse")
    plugins = _plugin_files(directory)
    return [
        Case("apx", apx, {}, ("chip_id", "tot_us")),
        Case("apx_log", _apx_log(apx, directory), {}, ("readout_id", "row")),
        Case("it02_dense", it02, {}, ("time_ns",)),
        Case("it02_sparse", sparse, {}, ("time_ns",)),
        Case("spectro_stt1", _sample("photon_events_stt1.bin", directory), {},
             ("channel", "macrotime_ns")),
        Case("spectro_legacy", _legacy_spectro(directory), {}, ("channel",)),
        Case("sp01", _sample("decay_curves_sp01.bin", directory), {}, ("channel",)),
        Case("spf1", _sample("phasors_spf1.bin", directory), {}, ("channel",)),
        Case("records", _records(directory),
             {"format": "records", "dtype": RECORD_DTYPE, "header": RECORD_HEADER},
             ("time",)),
        Case("itt1", _sample("time_tagger_itt1.bin", directory), {}, ("time_ns",)),
        Case("fcs1", _sample("fcs_curves_fcs1.bin", directory), {}, ("lag_index", "g2")),
        Case("it01", _sample("intensity_tracing_it01.bin", directory), {}, ("ch2",)),
        Case("astropix3", _sample("astropix3_injection_run.apx", directory), {},
             ("chip_id", "tot_us")),
        Case("astep", _sample("astep_quad_chip_frames.bin", directory), {},
             ("chip_id", "tot_us")),
        Case("tpl", plugins["tpl"], {}, ("ch1",)),
        Case("stamp", plugins["stamp"], {}, ("t",)),
        # Headerless: found by its extension, which a buffer does not have.
        Case("raw16", plugins["raw16"], {"format": "raw16"}, ("b",)),
    ]

