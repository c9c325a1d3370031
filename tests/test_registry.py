"""Format registry and detection (``bindf/registry.py``): magic, then extension, then probe."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import bindf
from bindf._source import Source
from bindf.errors import UnknownFormatError
from bindf.formats._base import FormatReader
from bindf.registry import FORMATS, PROBE_BYTES, detect_format, get_format, open_reader


def preamble(magic: bytes, header: dict) -> bytes:
    raw = json.dumps(header).encode()
    return magic + struct.pack("<I", len(raw)) + raw


def write(tmp_path, name: str, data: bytes) -> Source:
    path = tmp_path / name
    path.write_bytes(data)
    return Source(str(path))


def legacy_spectro_bytes(n: int = 20) -> bytes:
    rec = np.zeros(n, dtype=[("e", "u1"), ("mi", "<f8"), ("ma", "<f8")])
    rec["e"] = np.arange(n) % 3
    rec["mi"] = 1.5
    rec["ma"] = np.arange(n) * 10.0
    return rec.tobytes()


def test_registry_is_consistent():
    names = [spec.name for spec in FORMATS]
    assert len(names) == len(set(names))
    assert {"apx", "it02", "spectro", "sp01", "spf1"} <= set(names)
    magics = [m for spec in FORMATS for m in spec.magics]
    assert len(magics) == len(set(magics))
    # No magic is a prefix of another: detection order cannot matter.
    for a in magics:
        for b in magics:
            assert a == b or not b.startswith(a)
    for spec in FORMATS:
        cls = spec.reader_class()
        assert issubclass(cls, FormatReader)
        assert cls.name == spec.name
        assert get_format(spec.name) is spec


def test_every_public_format_has_functions():
    import pandas as pd
    import polars as pl

    for name in bindf._PUBLIC_FORMATS:
        assert callable(getattr(bindf, f"read_{name}"))
        assert callable(getattr(bindf, f"scan_{name}"))
        assert callable(getattr(pd, f"read_{name}"))
        assert callable(getattr(pl, f"read_{name}"))
        assert callable(getattr(pl, f"scan_{name}"))
    for name in ("write_spectro", "write_sp01", "write_spf1"):
        assert name in bindf.__all__ and callable(getattr(bindf, name))


def test_get_format_unknown():
    with pytest.raises(ValueError, match="unknown format 'nope'.*spectro"):
        get_format("nope")


def test_an_empty_format_name_is_refused_everywhere(tmp_path: Path) -> None:
    """format="" names no format: not "detect it" (None says that), wherever it is given."""
    run = Path(__file__).parent / "data" / "20250723_092534_data.apx"
    for call in (lambda: bindf.read(run, format=""), lambda: bindf.read_headers(run, format=""),
                 lambda: bindf.open(run, format=""), lambda: bindf.scan(run, format=""),
                 lambda: bindf.ingest(run.parent, tmp_path / "dataset", format=""),
                 lambda: bindf.follow(run, format="", idle_timeout=0)):
        with pytest.raises(ValueError, match="unknown format ''; bindf knows"):
            call()


@pytest.mark.parametrize(
    ("magic", "name"),
    [(b"%APXDF", "apx"), (b"IT02", "it02"), (b"STT1", "spectro"), (b"SP01", "sp01"),
     (b"SPF1", "spf1"), (b"ITT1", "itt1"), (b"IT01", "it01"), (b"FCS1", "fcs1")],
)
def test_magic_detection(tmp_path, magic, name):
    source = write(tmp_path, "file.dat", preamble(magic, {"channels": [0]}))
    assert detect_format(source).name == name


def test_detect_format_takes_what_read_takes(tmp_path):
    """A path, a str, bytes or a file object, as bindf.read takes them (a Source too)."""
    import io

    data = preamble(b"IT01", {"channels": [0]})
    source = write(tmp_path, "file.dat", data)
    for given in (Path(source.path), source.path, data, io.BytesIO(data)):
        assert bindf.detect_format(given).name == "it01"
    with pytest.raises(bindf.UnknownFormatError, match="unrecognised file format"):
        bindf.detect_format(b"nothing known")
    with pytest.raises(FileNotFoundError):
        bindf.detect_format(tmp_path / "missing.bin")


def test_magic_beats_extension(tmp_path):
    source = write(tmp_path, "looks_like.apx", preamble(b"SP01", {"channels": [0]}))
    assert detect_format(source).name == "sp01"


def test_extension_when_no_magic(tmp_path):
    source = write(tmp_path, "run.APX", b"garbage without a magic")
    assert detect_format(source).name == "apx"


def test_probe_when_no_magic_or_extension(tmp_path):
    source = write(tmp_path, "spectroscopy-output-7.bin", legacy_spectro_bytes())
    assert detect_format(source).name == "spectro"


def test_probe_only_looks_at_the_head(tmp_path):
    # Valid records first, garbage after PROBE_BYTES: still detected (cheap probe).
    data = legacy_spectro_bytes(PROBE_BYTES // 17 + 1)
    source = write(tmp_path, "big.bin", data + b"\xff" * 1000)
    assert detect_format(source).name == "spectro"


def test_empty_file(tmp_path):
    with pytest.raises(UnknownFormatError, match="empty") as exc:
        detect_format(write(tmp_path, "e.bin", b""))
    assert exc.value.offset == 0


def test_unknown_file_lists_formats(tmp_path):
    source = write(tmp_path, "x.txt", b"hello, this is text and not a binary export\n" * 3)
    with pytest.raises(UnknownFormatError) as exc:
        detect_format(source)
    message = str(exc.value)
    assert exc.value.offset == 0
    assert str(tmp_path / "x.txt") in message
    for spec in FORMATS:
        assert spec.name in message
    with pytest.raises(UnknownFormatError):
        bindf.read(source.path)


def test_short_files_are_unknown(tmp_path):
    for i, data in enumerate([b"S", b"SP", b"SP0", b"\x00" * 17, b"\x01" * 20]):
        with pytest.raises(UnknownFormatError):
            detect_format(write(tmp_path, f"s{i}.bin", data))


def test_open_reader_forced_format(tmp_path):
    source = write(tmp_path, "f.bin", preamble(b"SPF1", {"harmonics": 1}))
    reader = open_reader(source, "spf1")
    assert reader.name == "spf1" and reader.header == {"harmonics": 1}
    with pytest.raises(UnknownFormatError, match="expected magic b'SP01'"):
        open_reader(source, "sp01")
    assert open_reader(source).name == "spf1"


SAMPLES = Path(bindf.__file__).parent / "samples"


@pytest.mark.parametrize("output", ["pandas", "arrow"])
def test_a_file_of_another_format_is_never_decoded_as_a_format_without_magic(
        tmp_path, output):
    """Legacy spectroscopy and A-STEP have no magic: their readers decode any bytes. A
    file carrying another format's magic, given one of those formats (or following a
    first file of one in a list or glob), was read as rows of garbage (exit 0 from
    ``bindf convert``): it is an UnknownFormatError naming the format it is."""
    it02 = (SAMPLES / "intensity_tracing_it02.bin").read_bytes()
    sp01 = SAMPLES / "decay_curves_sp01.bin"
    cut = tmp_path / "run.bin"  # a whole number of 17-byte records: no truncation hint
    cut.write_bytes(it02[: len(it02) // 17 * 17])
    cases = [
        (lambda: bindf.read_spectro(cut, output=output), cut, "it02", "spectro"),
        (lambda: bindf.read_spectro(cut, container="legacy", output=output), cut, "it02",
         "spectro"),
        (lambda: bindf.read_astep(sp01, output=output), sp01, "sp01", "astep"),
        (lambda: bindf.read([SAMPLES / "photon_events_stt1.bin", cut], output=output), cut,
         "it02", "spectro"),
        (lambda: bindf.read([SAMPLES / "astep_quad_chip_frames.bin", sp01], format="astep",
                            output=output), sp01, "sp01", "astep"),
        (lambda: list(bindf.read([SAMPLES / "photon_events_stt1.bin", cut], chunksize=5,
                                 output=output)), cut, "it02", "spectro"),
    ]
    for read, path, actual, asked in cases:
        with pytest.raises(UnknownFormatError) as info:
            read()
        assert info.value.path == str(path) and info.value.offset == 0
        assert f"of format {actual!r}" in str(info.value)
        assert f"not {asked!r}; read it with format={actual!r}" in str(info.value)
    # a file of the format's own magic is read as before
    assert len(bindf.read_spectro(SAMPLES / "photon_events_stt1.bin", output=output)) > 0


def test_read_with_format_argument(tmp_path):
    source = write(tmp_path, "f.bin", preamble(b"SP01", {"channels": [2]}) + bytes(8 + 1024))
    assert bindf.read(source.path, format="sp01").shape == (256, 5)
    with pytest.raises(UnknownFormatError):
        bindf.read(source.path, format="spf1")


def test_option_defaults_agree_with_the_readers_constants() -> None:
    """An option's default is written in the spec (what help(), the stub and the docs
    show) and, where the reader needs it as a constant, as ``DEFAULT_<NAME>`` in the
    reader's module: the two must agree (a change to one alone would make the documented
    default differ from the real one)."""
    import sys

    checked = 0
    for spec in FORMATS:
        module = sys.modules[spec.reader_class().__module__]
        for param in spec.options:
            constant = f"DEFAULT_{param.name.upper()}"
            if hasattr(module, constant):
                assert getattr(module, constant) == param.default, (spec.name, param.name)
                checked += 1
    assert checked >= 4  # apx chunk_bytes; astep chunk_bytes, v3_tick_ns, v4_tick_ns


def test_option_values_are_checked_from_their_annotations() -> None:
    """What ``ingest`` and ``follow`` refuse before reading: a value outside the values an
    option's annotation lists, for every format taking the option; other values (numpy
    integers, ``Any`` options, ranges) are left to the readers."""
    import numpy as np

    from bindf._params import allowed_values
    from bindf.registry import check_option_values

    assert allowed_values('Literal["dense", "sparse"] | None') == ["dense", "sparse", None]
    assert allowed_values("bool | None") == [True, False, None]
    assert allowed_values("int") is None and allowed_values("Any") is None
    for good in ({"ts_bytes": np.int64(4)}, {"fill_gaps": np.True_}, {"chip": "auto"},
                 {"level": np.str_("hits")},
                 {"chunk_bytes": "left to the reader"}, {"stitch": None}, {"dtype": "<u4"}):
        check_option_values(good)
    for bad, message in (({"ts_bytes": True}, r"ts_bytes must be one of \(2, 4, 6, 8, None\)"),
                         ({"fill_gaps": 1}, r"fill_gaps must be one of \(True, False\)"),
                         ({"ts_bytes": 4.0}, "not 4.0"),
                         ({"shape": "Wide"}, r"\(format sp01\), not 'Wide'")):
        with pytest.raises(ValueError, match=message):
            check_option_values(bad)
    with pytest.raises(ValueError, match=r"\(format apx, apx_log\)"):
        check_option_values({"level": "hit"}, None)
    check_option_values({"level": "hit"}, "it02")  # not an option of it02: not this check's
