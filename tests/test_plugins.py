"""Formats added from outside bindf get everything a built-in gets.

Three ways in (``tests/example_formats.py``): a package that declares its format only
through the ``bindf.formats`` entry point (``tpl``), a ``bindf.register_format`` call at
run time (``stamp``, binary header plus a derived column), and a headerless format
detected by its extension (``raw16``). For each: readers, pandas/polars functions,
scans with projection pushdown, ``n_rows``, dask byte-range partitions, CLI info and
convert, truncation warnings, and a fuzz target. The robustness sweep covers them through
the registry (``tests/test_robustness.py``).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import bindf
from bindf.cli import main as cli_main
from bindf.formats.fixed_format import FixedLayoutReader

HERE = Path(__file__).parent
ADDED = ("tpl", "stamp", "raw16")
SUFFIX = {"tpl": ".tpl", "stamp": ".bin", "raw16": ".r16"}
N = 5000


def _frame(name: str) -> dict[str, np.ndarray]:
    i = np.arange(N)
    if name == "tpl":
        return {"t_ns": i * 1.5, "ch1": i % 7, "ch3": i * 3}
    if name == "stamp":
        return {"t": i * 10, "value": i - 100}
    return {"a": i, "b": i / 4, "c": -i % 300, "d": i % 60000}


HEADERS = {"tpl": {"channels": [0, 2]}, "stamp": {"scale": 4, "spare": 0}, "raw16": None}


@pytest.fixture(params=ADDED)
def added(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    name = request.param
    path = tmp_path / f"data{SUFFIX[name]}"
    getattr(bindf, f"write_{name}")(path, _frame(name), HEADERS[name])
    return name, path


def test_all_three_are_registered() -> None:
    names = [spec.name for spec in bindf.list_formats()]
    assert set(ADDED) <= set(names)
    assert {"tpl", "stamp", "raw16"} <= set(bindf.registry.format_names())


def test_read_every_output_and_detection(added: tuple[str, Path]) -> None:
    name, path = added
    expected = _frame(name)
    df = bindf.read(path)  # detected: magic (tpl, stamp) or extension (raw16)
    assert df.attrs["bindf"]["format"] == name
    for column, values in expected.items():
        np.testing.assert_array_equal(df[column].to_numpy(), values)
    if name == "stamp":
        np.testing.assert_allclose(df["ratio"].to_numpy(), expected["value"] / 4)
        assert df.bindf.header == {"scale": 4, "spare": 0}
    if name == "tpl":
        assert df.bindf.header == {"channels": [0, 2]}
    reader = getattr(bindf, f"read_{name}")
    assert reader(path, output="polars").equals(pl.from_pandas(df))
    assert getattr(pd, f"read_{name}")(path).equals(df)
    assert getattr(pl, f"read_{name}")(path).equals(pl.from_pandas(df))
    table = reader(path, output="arrow", columns=list(expected)[::-1], n_rows=7)
    assert table.column_names == list(expected)[::-1] and table.num_rows == 7
    chunks = list(reader(path, chunksize=1000))
    assert [len(c) for c in chunks] == [1000] * 5


def test_scan_pushes_the_projection_into_the_reader(added: tuple[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    name, path = added
    asked: list[list[str]] = []
    original = FixedLayoutReader.raw_fields_for

    def spy(self, columns):  # noqa: ANN001, ANN202
        fields = original(self, columns)
        asked.append(fields)
        return fields

    monkeypatch.setattr(FixedLayoutReader, "raw_fields_for", spy)
    last = list(_frame(name))[-1]
    lf = getattr(pl, f"scan_{name}")(path)
    got = lf.filter(pl.col(last) > 10).select(last).head(3).collect()
    assert got.height == 3 and got.columns == [last]
    fields = asked[-1]
    if name == "stamp":  # a transform may use any field: all are read
        assert fields == ["t", "value"]
    else:
        assert fields == [last]
    assert getattr(bindf, f"scan_{name}")(path).collect().height == N


def test_dask_gets_record_aligned_partitions(added: tuple[str, Path]) -> None:
    pytest.importorskip("dask.dataframe")
    import bindf.dask

    name, path = added
    ddf = getattr(bindf.dask, f"read_{name}")(path, blocksize=20_000)
    assert ddf.npartitions > 1
    eager = bindf.read(path)
    pd.testing.assert_frame_equal(ddf.compute().reset_index(drop=True), eager)


def test_cli_info_and_convert(added: tuple[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    name, path = added
    assert cli_main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    record = info[0] if isinstance(info, list) else info
    assert record["format"] == name and record["rows"] == N
    out = tmp_path / "out.parquet"
    assert cli_main(["convert", str(path), "-o", str(out)]) == 0
    assert bindf.read_parquet(out).equals(bindf.read(path))


def test_truncated_file_warns_and_keeps_every_complete_record(
        added: tuple[str, Path]) -> None:
    name, path = added
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.warns(bindf.TruncatedFileWarning) as caught:
        df = bindf.read(path)
    assert len(df) == N - 1
    assert caught[0].message.offset == len(data) - _record_size(name)


def _record_size(name: str) -> int:
    return {"tpl": 16, "stamp": 12, "raw16": 16}[name]


def test_fuzz_target_and_robustness_subject_exist(added: tuple[str, Path]) -> None:
    sys.path.insert(0, str(HERE.parent / "fuzz"))
    try:
        import contract
    finally:
        sys.path.remove(str(HERE.parent / "fuzz"))
    import test_robustness

    name, path = added
    assert name in contract.targets()
    sample = bindf.get_format(name).sample_bytes()
    for config in range(len(contract.configs_for(name))):
        for data in (sample, sample[: len(sample) // 2], sample[:7]):
            contract.check_input(name, bytes([config]) + data,
                                 str(path.with_name("fuzz" + contract.suffix_for(name))))
    assert any(s.family == name for s in test_robustness.SUBJECTS)


def test_signatures_are_explicit_and_hint_pandas_names(added: tuple[str, Path]) -> None:
    name, path = added
    for function in (getattr(bindf, f"read_{name}"), getattr(bindf, f"scan_{name}"),
                     getattr(pd, f"read_{name}"), getattr(pl, f"scan_{name}")):
        params = inspect.signature(function).parameters
        assert "source" in params and "on_error" in params
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    with pytest.raises(TypeError, match="did you mean n_rows="):
        getattr(bindf, f"read_{name}")(path, nrows=3)
    with pytest.raises(TypeError, match="did you mean columns="):
        getattr(bindf, f"read_{name}")(path, usecols=["x"])


def test_register_format_refuses_a_clash_unless_replace() -> None:
    clash = bindf.FixedRecordFormat("apx", dtype="<u4", description="not AstroPix")
    with pytest.raises(ValueError, match="already registered.*built-in.*replace=True"):
        bindf.register_format(clash)
    original = bindf.get_format("raw16")
    replacement = bindf.FixedRecordFormat("raw16", dtype="<u8", extensions=(".r16",))
    try:
        assert bindf.register_format(replacement, replace=True) is replacement
        assert bindf.get_format("raw16") is replacement
    finally:
        bindf.register_format(original, replace=True)


@pytest.fixture
def raw16_as_counts(tmp_path: Path):
    """``raw16`` replaced for one test by a format of binned counts (IT02's columns and
    header field) that declares IT02's analysis helpers and follow totals; a file of it."""
    original = bindf.get_format("raw16")
    counts = bindf.FixedRecordFormat(
        "raw16", dtype=[("time_ns", "<u8"), ("ch1", "<u4"), ("ch2", "<u4")],
        header=[("bin_width_micros", "<f8")], magic=b"CNT1", extensions=(".r16",),
        analysis="it02", live_totals=("time", "channels"))
    records = np.zeros(4, dtype=[("time_ns", "<u8"), ("ch1", "<u4"), ("ch2", "<u4")])
    records["time_ns"] = [0, 1000, 2000, 3000]
    records["ch1"], records["ch2"] = [1, 2, 3, 4], [10, 0, 10, 0]
    path = tmp_path / "run.r16"
    path.write_bytes(b"CNT1" + np.float64(1.0).tobytes() + records.tobytes())
    bindf.register_format(counts, replace=True)
    try:
        yield path
    finally:
        bindf.register_format(original, replace=True)


def test_a_format_added_from_outside_takes_the_analysis_helpers_it_declares(raw16_as_counts):
    from bindf.analysis import helpers_for

    assert helpers_for("raw16") == ("rebin", "count_rate", "plot_trace")
    frame = bindf.read(raw16_as_counts, output="polars")
    rebinned = frame.bindf.rebin(2)  # 2 µs bins of the 1 µs bins, each at its last one
    assert rebinned["time_ns"].to_list() == [1000, 3000]
    assert rebinned["ch1"].to_list() == [3, 7] and rebinned["ch2"].to_list() == [10, 10]
    with pytest.raises(TypeError, match=r"hit_map\(\) works on 'apx' / 'apx_log' frames, "
                                        r"but this frame's bindf format is 'raw16'; "
                                        r"its helpers are: rebin, count_rate, plot_trace"):
        frame.bindf.hit_map()
    with resources.as_file(resources.files("bindf") / "samples" / "photon_events_stt1.bin") as stt1:
        photons = bindf.read_spectro(stt1)
    with pytest.raises(TypeError, match=r"rebin\(\) works on 'it02' / 'it01' / 'raw16' frames"):
        photons.bindf.rebin(2)


def test_a_format_added_from_outside_gets_the_follow_totals_it_declares(raw16_as_counts):
    import io

    from bindf._follow_cli import Status

    frame = bindf.read(raw16_as_counts, output="arrow")
    status = Status(io.StringIO(), 1.0)
    status.add(frame, "raw16")

    class Totals:
        rows, bytes = 4, 60

    assert status.line(Totals()).split(" | ")[3:] == ["last 3000", "ch1=10 ch2=20"]


@pytest.mark.parametrize(("keywords", "error", "message"), [
    ({"analysis": "it03"}, ValueError, r"analysis is one of \['apx', 'fcs1', 'it02', 'spectro'\]"),
    ({"live_totals": ("time", "hits")}, ValueError, r"live_totals holds some of .*not 'hits'"),
    ({"live_totals": "time"}, TypeError, r"live_totals is a tuple"),
])
def test_unknown_analysis_family_or_follow_total_is_refused(keywords, error, message):
    with pytest.raises(error, match=message):
        bindf.FormatSpec("toy", "toy", FixedLayoutReader, **keywords)
    with pytest.raises(error, match=message):
        bindf.FixedRecordFormat("toy", dtype="<u4", **keywords)


def test_every_analysis_family_has_its_helpers():
    from bindf import registry
    from bindf.analysis import FAMILIES

    assert set(FAMILIES) == set(registry.ANALYSIS_FAMILIES)


def _fresh_python(code: str, *sites: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(s) for s in sites),
                                         env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)




def _write_plugin(site: Path, package: str, name: str, source: str) -> None:
    """An installed plugin in ``site``: module ``package`` (``source``), declaring the
    format ``name`` (its ``spec``) in the ``bindf.formats`` entry-point group."""
    (site / package).mkdir()
    (site / package / "__init__.py").write_text(source)
    info = site / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[bindf.formats]\n{name} = {package}:spec\n")

def test_threads_that_use_a_plugin_first_at_once_all_read_it(tmp_path: Path) -> None:
    """The registry took a plugin out of its pending names before importing it and
    registered its spec after: threads that used it meanwhile (a thread pool over
    files, a dask worker's threads) found the name neither pending nor loaded ("unknown
    format", most of 8 threads with a plugin whose import takes half a second). They
    wait for the one import now."""
    _write_plugin(tmp_path, "bindf_slow_plugin", "slw",
                  "import time\ntime.sleep(0.5)  # (an import that takes a moment, as scipy's)\n"
                  "import bindf\n"
                  "spec = bindf.FixedRecordFormat('slw', magic=b'SLW1', header='json',\n"
                  "    dtype=[('t_ns', '<f8'), ('n', '<u4')], extensions=('.slw',))\n")
    data = tmp_path / "x.slw"
    data.write_bytes(b"SLW1" + (2).to_bytes(4, "little") + b"{}"
                     + bytes(12 * 10))  # ten records
    result = _fresh_python(
        "import bindf\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        f"path = {str(data)!r}\n"
        "def read(i):\n"
        "    return len(bindf.read(path) if i % 2 else bindf.read_slw(path))\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    print(list(pool.map(read, range(8))))\n",
        tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([10] * 8)


def test_a_plugin_that_lists_the_formats_as_it_loads_loads_once(tmp_path: Path) -> None:
    """A plugin module that calls bindf.list_formats() (or detects a file) while it is
    imported: with its name kept pending during the import, the listing loaded it again
    from the half-imported module ("failed to load") and the first load then raised a
    KeyError. The listing now skips the plugin being imported."""
    _write_plugin(tmp_path, "bindf_listing_plugin", "lst", textwrap.dedent("""
        import bindf
        KNOWN = [spec.name for spec in bindf.list_formats()]
        spec = bindf.FixedRecordFormat("lst", magic=b"LST1", header="json",
                                       dtype=[("t_ns", "<f8")], extensions=(".lst",))
        """))
    data = tmp_path / "x.lst"
    data.write_bytes(b"LST1" + (2).to_bytes(4, "little") + b"{}" + bytes(8 * 3))
    result = _fresh_python(textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("error")
        import bindf
        print(len(bindf.read({str(data)!r})))
        import bindf_listing_plugin
        print("lst" in bindf_listing_plugin.KNOWN)
        """), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "False"]


def test_a_spec_sent_to_another_process_replaces_what_its_name_meant(tmp_path: Path) -> None:
    """dask sends a format registered at run time with its tasks. A worker registered it
    only when the name was unknown there: a built-in replaced on the client (or a spec
    registered again after an edit, on long-lived workers) was read with the worker's
    own version, without an error. Eight threads taking the spec at once all work."""
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import pickle, sys, threading
        from bindf import registry
        sent = pickle.loads(sys.stdin.buffer.read())
        names = []
        threads = [threading.Thread(target=lambda: names.append(
            registry.known_in_this_process(sent))) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(names == ["sp01"] * 8, registry.get_format("sp01").description)
        """))
    result = _fresh_python(textwrap.dedent(f"""
        import dataclasses, pickle, subprocess, sys
        import bindf
        from bindf import registry
        mine = dataclasses.replace(registry.get_format("sp01"), description="mine")
        bindf.register_format(mine, replace=True)
        print(registry.spec_for_workers("apx"))
        sent = pickle.dumps(registry.spec_for_workers("sp01"))
        print(subprocess.run([sys.executable, {str(worker)!r}], input=sent,
                             capture_output=True, check=True).stdout.decode())
        """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["apx", "True", "mine"]

def test_import_bindf_is_lazy_and_knows_plugin_names_up_front() -> None:
    result = _fresh_python(
        "import sys, bindf, pandas as pd, polars as pl\n"
        "assert callable(pd.read_tpl) and callable(pl.scan_tpl) and callable(bindf.read_tpl)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('bindf.formats.', 'dask',"
        " 'bindf_test_plugin')))\n"
        "print(loaded)\n",
        HERE / "plugin_site")
    assert result.returncode == 0, result.stderr
    loaded = eval(result.stdout)  # noqa: S307 - a list of names printed by the child
    # only the shared machinery, no format module, no plugin, no dask
    assert set(loaded) <= {"bindf.formats._base", "bindf.formats._fixed", "bindf.formats._stream",
                           "bindf.formats._record_fields", "bindf.formats.fixed_format"}, loaded


def test_a_format_named_as_a_pandas_or_polars_reader_leaves_theirs_with_a_warning() -> None:
    result = _fresh_python(
        "import warnings, bindf, pandas as pd, polars as pl\n"
        "own = pd.read_csv, pl.read_csv, pl.scan_csv, pd.read_excel\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    bindf.register_format(bindf.FixedRecordFormat('csv', dtype='<u4'))\n"
        "    bindf.register_format(bindf.FixedRecordFormat('excel', dtype='<u4'))\n"
        "assert (pd.read_csv, pl.read_csv, pl.scan_csv, pd.read_excel) == own\n"
        "assert callable(bindf.read_csv) and callable(bindf.scan_excel)\n"
        "print('\\n'.join(str(w.message) for w in caught))\n",
        HERE / "plugin_site")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "format 'csv': pandas.read_csv, polars.read_csv, polars.scan_csv are pandas' or "
        "polars' own and left as they are; read the format with bindf.read_csv and "
        "bindf.scan_csv",
        "format 'excel': pandas.read_excel, polars.read_excel are pandas' or polars' own and "
        "left as they are; read the format with bindf.read_excel"]


def test_a_read_with_format_given_imports_no_plugin() -> None:
    """A format given (A-STEP, no magic of its own: its file is checked against the
    other formats' magics) imports no plugin: only loaded formats are consulted."""
    sample = Path(bindf.__file__).parent / "samples" / "astep_quad_chip_frames.bin"
    result = _fresh_python(
        "import sys, warnings, bindf\n"
        "warnings.simplefilter('error')\n"
        f"bindf.read({str(sample)!r}, format='astep')\n"
        "print(sorted(m for m in sys.modules if m.startswith('bindf_test_plugin')))\n",
        HERE / "plugin_site")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_headerless_plugin_format_reads_bytes_that_look_like_a_magic(tmp_path: Path) -> None:
    """A plugin's headerless records may begin with any bytes, another format's magic
    too: the format given decides (refusing such files is for bindf's own magic-less
    formats, whose data cannot plausibly begin so)."""
    data = np.zeros(4, dtype="<u8")
    data[0] = int.from_bytes(b"ITT1\0\0\0\0", "little")
    path = tmp_path / "x.r16"
    path.write_bytes(data.tobytes())
    frame = bindf.read(path, format="raw16")
    assert len(frame) == 2


def test_a_broken_plugin_is_a_warning_naming_it() -> None:
    result = _fresh_python(
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "import bindf\n"
        "assert callable(bindf.read_brokenfmt)\n"
        "names = [s.name for s in bindf.list_formats()]\n"
        "assert 'brokenfmt' not in names and 'apx' in names, names\n"
        "from bindf.frontends.headers import read_headers\n"
        "assert bindf.read_headers is read_headers  # a reserved name: not replaced\n"
        f"frame = bindf.read({str(HERE / 'data' / 'spf1_phasors_example.bin')!r})\n"
        "assert frame.attrs['bindf']['format'] == 'spf1'  # detection loads every plugin\n"
        "try:\n"
        "    bindf.read_brokenfmt('x.bin')\n"
        "except ValueError as exc:\n"
        "    print('called:', exc)\n"
        "print('ok')\n",
        HERE / "broken_plugin_site")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "format plugin 'brokenfmt' (bindf_broken_plugin:spec) failed to load" in result.stderr
    assert ("<string>:3: BindfWarning: format plugin 'headers' (bindf_broken_plugin:spec) is "
            "ignored: the name is reserved: bindf.read_headers is one of bindf's own "
            "functions") in result.stderr  # at the `import bindf` line, not in importlib
    # a name that another format has: the warning says which one
    assert ("format plugin 'apx' (bindf_broken_plugin:spec) is ignored: the name is taken "
            "by a bindf built-in") in result.stderr
    # a plugin that calls sys.exit() at import is a warning too, not the end of the process
    assert ("format plugin 'exitfmt' (bindf_exiting_plugin:spec) failed to load: "
            "SystemExit: 3; it is ignored") in result.stderr
    # calling its reader later says why, not "unknown format"
    assert "called: format plugin 'brokenfmt' (bindf_broken_plugin:spec) failed to load: " \
        in result.stdout


def test_names_of_bindf_functions_are_reserved() -> None:
    import re

    import bindf.dask
    from bindf.registry import RESERVED_NAMES

    # every read_/scan_/write_ function of bindf's own, not made for a format
    own = {m.group(2) for module in (bindf, bindf.dask) for attribute in dir(module)
           if (m := re.match(r"(read|scan|write)_(\w+)$", attribute))
           and m.group(2) not in bindf.format_names() and m.group(2) != "records"}
    assert own == RESERVED_NAMES
    for name in sorted(RESERVED_NAMES):
        with pytest.raises(ValueError, match=f"'{name}' is reserved: bindf.read_{name} is"):
            bindf.FixedRecordFormat(name, dtype="<u4")


def test_samples_read_cleanly(added: tuple[str, Path], tmp_path: Path) -> None:
    name, _ = added
    path = tmp_path / f"sample{SUFFIX[name]}"
    path.write_bytes(bindf.get_format(name).sample_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = bindf.read(path, output="arrow")
    assert table.num_rows == 40 and isinstance(table, pa.Table)


def test_format_options_reach_the_dtype_callable_and_the_transform(tmp_path):
    """A FixedRecordFormat option may change the record fields (IT01's ``slots=``): the
    dtype callable and the transform get the option values as keyword arguments."""
    import numpy as np
    import pyarrow as pa

    from bindf._params import option

    def dtype(header, *, wide=False):
        return [("a", "<u4"), ("b", "<u4")] if wide else [("a", "<u8")]

    def transform(table, header, *, wide=False):
        return table.append_column("wide", pa.array([wide] * table.num_rows, pa.bool_()))

    spec = bindf.FixedRecordFormat(
        "optdemo", magic=b"OPTD", header="json", dtype=dtype, transform=transform,
        options=(option("wide", False, "bool", "two u32 fields instead of one u64"),),
        writer=False)
    bindf.register_format(spec, replace=True)
    try:
        path = tmp_path / "x.bin"
        values = np.array([1, 2**33], dtype="<u8")
        path.write_bytes(b"OPTD" + (2).to_bytes(4, "little") + b"{}" + values.tobytes())
        narrow = bindf.read_optdemo(path, output="polars")
        assert narrow["a"].to_list() == [1, 2**33] and not narrow["wide"].any()
        wide = bindf.read_optdemo(path, wide=True, output="polars")
        assert wide["a"].to_list() == [1, 0] and wide["b"].to_list() == [0, 2]
        assert wide["wide"].all()
    finally:  # later registry-driven tests (stub, sweeps) must not see it
        bindf.registry._BY_NAME.pop("optdemo", None)


# Registers a public format: after test_names_of_bindf_functions_are_reserved, whose
# sweep of bindf's functions would take its read_<name> for one of bindf's own.
def test_longest_matching_magic_wins(tmp_path: Path) -> None:
    """A plugin whose magic extends a built-in's (a newer revision) is detected as
    itself, whatever the registration order; the built-in keeps its files."""
    from bindf import registry

    spec = bindf.FixedRecordFormat("it02next", magic=b"IT02\xff\x02", dtype="<u4")
    registry.register_format(spec)
    try:
        newer = tmp_path / "new.bin"
        newer.write_bytes(b"IT02\xff\x02" + bytes(8))
        assert bindf.detect_format(newer).name == "it02next"
        assert bindf.read(newer)["value"].tolist() == [0, 0]
        assert bindf.detect_format(HERE / "data" / "intensity-tracing-export-data-example.bin"
                                   ).name == "it02"
    finally:  # later registry-driven tests (stub, sweeps) must not see it
        bindf.registry._BY_NAME.pop("it02next", None)


def test_records_cannot_be_replaced_and_typos_get_a_hint() -> None:
    with pytest.raises(ValueError, match="'records' is reserved: bindf.read_records"):
        bindf.register_format(bindf.FixedRecordFormat("records", dtype="<u4"), replace=True)
    assert bindf.get_format("records").reader == "bindf.formats.records:RecordsReader"
    with pytest.raises(ValueError, match=r"unknown format 'spectr'; did you mean 'spectro'\? "
                       r"bindf knows \[.*'tpl'") as info:
        bindf.get_format("spectr")
    assert "'records'" not in str(info.value)  # not a format to name in format=


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch):
    """Formats a test registers are gone afterwards (later registry-driven tests, the stub
    and the sweeps, must not see them)."""
    from bindf import registry

    monkeypatch.setattr(registry, "_BY_NAME", dict(registry._BY_NAME))
    monkeypatch.setattr(registry, "_DECLARED", dict(registry._DECLARED))
    monkeypatch.setattr(bindf, "__all__", list(bindf.__all__))
    names = set(vars(bindf))
    yield registry
    for name in set(vars(bindf)) - names:  # read_<name> & co. of the test's formats
        delattr(bindf, name)


def test_binary_header_values_are_json_and_write_back(tmp_path: Path,
                                                      scratch_registry) -> None:
    """Raw bytes, times, NaN and sub-arrays of a binary header record became bytes,
    datetime and float('nan') in the header dict, which every Arrow path (Arrow output,
    bindf.open, Parquet, bindf info) then failed to encode as JSON."""
    header = np.dtype([("serial", "V4"), ("started", "<M8[s]"), ("gate", "<m8[ms]"),
                       ("gain", "<f4"), ("name", "S6"), ("pair", "<u2", (2,)),
                       ("unset", "<M8[us]")])
    spec = bindf.FixedRecordFormat("vhdr", magic=b"VHDR", header=header,
                                   dtype=[("t", "<u8"), ("v", "<f4")])
    bindf.register_format(spec)
    record = np.zeros(1, header)
    record["serial"] = np.void(b"\x01\x02\xab\xcd")
    record["started"] = np.datetime64("2026-12-02T10:00:00")
    record["gate"] = np.timedelta64(1500, "ms")
    record["gain"] = np.nan
    record["name"] = b"abc"
    record["pair"] = [3, 4]
    record["unset"] = np.datetime64("NaT", "us")
    rows = np.zeros(3, [("t", "<u8"), ("v", "<f4")])
    path = tmp_path / "a.vhdr"
    path.write_bytes(b"VHDR" + record.tobytes() + rows.tobytes())
    expected = {"serial": "0102abcd", "started": "2026-12-02T10:00:00", "gate": 1500,
                "gain": None, "name": "abc", "pair": [3, 4], "unset": None}
    assert bindf.read_header(path) == expected
    table = bindf.read_vhdr(path, output="arrow")
    assert json.loads(table.schema.metadata[b"bindf.header"]) == expected
    frame = bindf.read_vhdr(path)
    bindf.to_parquet(frame, tmp_path / "a.parquet")
    assert bindf.read_parquet(tmp_path / "a.parquet").attrs["bindf"]["header"] == expected
    bindf.write_vhdr(tmp_path / "b.vhdr", frame)  # the writer takes each value back
    assert (tmp_path / "b.vhdr").read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="header field 'c' .* no complex number"):
        bindf.FixedRecordFormat("chdr", magic=b"CHDR", header=[("c", "<c8")], dtype="<u4")


def test_a_plugin_readers_options_are_checked_and_defaulted(tmp_path: Path,
                                                            scratch_registry) -> None:
    """A reader of its own that checks nothing: bindf.read(..., typo=1) was silently
    ignored, and self.options lacked the declared defaults."""
    from bindf._params import option
    from bindf.formats._base import FormatReader

    seen: dict[str, object] = {}

    class KnobReader(FormatReader):
        name = "knob"
        label = "knob test"

        def _read_header(self, f):
            seen.update(self.option_values)
            return {"bytes": bytes(f.read(4))} if self.option_values["raw"] else {}

        @property
        def schema(self):
            return pa.schema([("x", pa.uint8())])

        def _batches(self, columns, batch_size, n_rows):
            yield pa.record_batch([pa.array([1], pa.uint8())], names=["x"])

    bindf.register_format(bindf.FormatSpec(
        "knob", "knob test", KnobReader, magics=(b"KNOB",),
        options=(option("level", 7, "int", "a knob"), option("raw", False, "bool", "bytes"))))
    path = tmp_path / "k.bin"
    path.write_bytes(b"KNOB")
    assert bindf.read(path)["x"].tolist() == [1]
    assert seen == {"level": 7, "raw": False}
    bindf.read(path, level=3)
    assert seen["level"] == 3
    with pytest.raises(TypeError, match=r"unexpected option\(s\) for read_knob: \['levle'\]; "
                                        "did you mean level="):
        bindf.read(path, levle=3)
    with pytest.raises(bindf.HeaderError, match="reader of format 'knob' made is not JSON "
                                               "values .*bytes is not JSON serializable"):
        bindf.read(path, raw=True)


def test_equal_magics_go_to_the_first_declared_format(tmp_path: Path,
                                                      scratch_registry) -> None:
    """Between equally long magics the first declared format wins, loaded or not yet:
    the answer depended on whether an entry-point plugin had been used in the process."""
    twin = bindf.FixedRecordFormat("tpl_twin", magic=b"TPL1", header="json", dtype="<u4")
    bindf.register_format(twin)  # declared after the tpl entry point
    path = tmp_path / "c.tpl"
    bindf.write_tpl(path, _frame("tpl"), HEADERS["tpl"])
    assert bindf.detect_format(path).name == "tpl"
    scratch_registry._BY_NAME["tpl"] = scratch_registry._BY_NAME.pop("tpl")  # loaded last
    assert bindf.detect_format(path).name == "tpl"


def test_a_probe_that_raises_is_a_warning_not_a_failed_detection(tmp_path: Path,
                                                                 scratch_registry) -> None:
    def probe(head, source):
        raise ZeroDivisionError("probe bug")

    bindf.register_format(bindf.FixedRecordFormat("bugprobe", dtype="<u4", probe=probe))
    path = tmp_path / "unknown.xyz"
    path.write_bytes(b"\x00\x01" * 40)
    with pytest.warns(bindf.BindfWarning, match="probe of format 'bugprobe' failed on this "
                                                r"file \(ZeroDivisionError: probe bug\)"):
        with pytest.raises(bindf.UnknownFormatError, match="unrecognised file format"):
            bindf.read(path)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"dtype": [("a", "<u2", (2,)), ("a_0", "<u2")]}, ValueError,
     "'a' and 'a_0' both give the column 'a_0'"),
    ({"dtype": "<u4", "extensions": ".xyz"}, TypeError, r"extensions is a tuple"),
    ({"dtype": "<u4", "extensions": ("xyz",)}, ValueError, "start with a dot"),
    ({"dtype": "<u4", "rows_per_record": 0}, ValueError, "rows_per_record must be"),
    ({"dtype": "<u4", "transform": 5}, TypeError, "transform must be a function"),
    ({"dtype": "<q9"}, ValueError, r"dtype='<q9' is not a numpy dtype"),
    ({"dtype": "<u4", "magic": b"AB", "header": "yaml"}, ValueError, 'header must be "json"'),
    ({"dtype": "<u4", "magic": "ABCD"}, TypeError, "magic is bytes"),
    ({"dtype": "<u4", "probe": "yes"}, TypeError, "probe must be a function"),
])
def test_a_bad_spec_is_refused_when_it_is_declared(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        bindf.FixedRecordFormat("badspec", **kwargs)
