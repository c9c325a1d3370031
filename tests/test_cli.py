"""The ``bindf`` command line: commands, exit codes, atomic output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import write_stt1

import bindf
from bindf import cli


def run(*args: str) -> int:
    return cli.main(list(args))


def test_info_json(stt1_files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run("info", str(stt1_files[0]), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "spectro" and info["rows"] == 1000
    assert info["header"]["laser_period_ns"] == 25.0
    assert "macrotime_ns" in info["columns"]


def test_info_gives_each_file_the_options_of_its_format(tmp_path: Path, capsys) -> None:
    """As read_headers: over a glob of several formats, --option layout=sparse reaches
    the IT02 files only (it failed: "unexpected option(s) for read_astep"); an option
    that no format takes is a usage error."""
    samples = Path(bindf.__file__).parent / "samples"
    for name in ("intensity_tracing_it02.bin", "decay_curves_sp01.bin",
                 "astropix_threshold_scan.apx"):
        (tmp_path / name).write_bytes((samples / name).read_bytes())
    assert run("info", str(tmp_path / "*"), "--option", "layout=dense", "--json") == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["format"] for r in records] == ["apx", "sp01", "it02"]
    assert run("info", str(tmp_path / "*"), "--option", "layut=dense") == 2
    assert "--option layut: no format takes it; did you mean layout?" in capsys.readouterr().err


def test_info_text_many_files(stt1_files: list[Path], tmp_path: Path, capsys) -> None:
    assert run("info", str(tmp_path / "run*.bin")) == 0
    out = capsys.readouterr().out
    assert out.count("format: spectro") == 3 and "rows:   250" in out


def test_head(stt1_files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run("head", str(stt1_files[0]), "-n", "3", "--columns", "event,macrotime_ns") == 0
    out = capsys.readouterr().out
    assert "shape: (3, 2)" in out and "microtime_ns" not in out


@pytest.mark.parametrize("ext", [".parquet", ".arrow", ".csv"])
def test_convert_each_kind(stt1_files: list[Path], tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"out{ext}"
    assert run("convert", str(tmp_path / "run*.bin"), "-o", str(out), "-q") == 0
    expected = bindf.read(str(tmp_path / "run*.bin"), output="polars")
    if ext == ".parquet":
        got = pl.read_parquet(out)
        meta = pq.read_schema(out).metadata
        assert json.loads(meta[b"bindf.header"]) == expected.bindf.header
        assert bindf.read_parquet(out, output="polars").bindf.format == "spectro"
    elif ext == ".arrow":
        got = pl.read_ipc(out)
    else:
        got = pl.read_csv(out)
    assert got.height == 1750
    assert got["macrotime_ns"].to_list() == expected["macrotime_ns"].to_list()


def test_convert_output_dir_and_columns(stt1_files: list[Path], tmp_path: Path) -> None:
    outdir = tmp_path / "pq"
    assert run("convert", *map(str, stt1_files), "--output-dir", str(outdir),
               "--columns", "event,channel", "-q") == 0
    assert sorted(p.name for p in outdir.iterdir()) == ["run0.parquet", "run1.parquet",
                                                         "run2.parquet"]
    assert pl.read_parquet(outdir / "run2.parquet").columns == ["event", "channel"]


def test_convert_refuses_to_overwrite(stt1_files: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"precious")
    assert run("convert", str(stt1_files[0]), "-o", str(out)) == cli.EX_CANTCREAT
    assert out.read_bytes() == b"precious"
    assert "--force" in capsys.readouterr().err
    assert run("convert", str(stt1_files[0]), "-o", str(out), "--force", "-q") == 0
    assert pl.read_parquet(out).height == 1000


def test_bad_input_leaves_no_partial_output(tmp_path: Path, capsys) -> None:
    good = write_stt1(tmp_path / "a.bin", n=100)
    bad = tmp_path / "b.bin"
    bad.write_bytes(b"STT1\x02\x00\x00\x00[]")  # JSON that is not an object
    out = tmp_path / "out.parquet"
    assert run("convert", str(good), str(bad), "-o", str(out)) == cli.EX_DATAERR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.bin" in err and "Traceback" not in err
    assert not out.exists()
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and not [
        p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_exit_codes(tmp_path: Path, capsys) -> None:
    assert run("info", str(tmp_path / "missing.bin")) == cli.EX_NOINPUT
    (tmp_path / "junk.bin").write_bytes(b"\x00junk")
    assert run("info", str(tmp_path / "junk.bin")) == cli.EX_DATAERR
    write_stt1(tmp_path / "a.bin", n=10)
    assert run("convert", str(tmp_path / "a.bin"), "-o", str(tmp_path / "x.xlsx")) == cli.EX_USAGE
    assert run("head", str(tmp_path / "a.bin"), "--columns", "nope") == cli.EX_USAGE
    assert run("convert", str(tmp_path / "a.bin"), "-o",
               str(tmp_path / "no" / "dir" / "x.parquet")) == cli.EX_IOERR
    with pytest.raises(SystemExit) as exc:
        run("frobnicate")
    assert exc.value.code == cli.EX_USAGE
    for line in capsys.readouterr().err.splitlines():
        assert "Traceback" not in line


def test_truncation_warning_is_one_line(tmp_path: Path, capsys) -> None:
    path = write_stt1(tmp_path / "a.bin", n=10)
    path.write_bytes(path.read_bytes()[:-3])
    assert run("head", str(path)) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "truncated" in err and "Traceback" not in err


def test_python_dash_m_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "bindf", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for code in ("65", "66", "73", "74", "130", "143"):
        assert code in out


# -- bad options and arguments: one line, exit 2 ----------------------------------------
def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(("args", "message"), [
    (["head", "{f}", "--option", "nope=1"], "unexpected option(s) for read_spectro: ['nope']"),
    (["head", "{f}", "--option", "n_rows=5"], "--option n_rows: use -n instead"),
    (["head", "{f}", "--option", 'columns=["event"]'], "--option columns: use --columns instead"),
    (["head", "{f}", "--option", "output=pandas"], "--option output: bindf head sets output itself"),
    (["head", "{f}", "--option", "format=spectro"], "--option format: use --format instead"),
    (["head", "{f}", "--option", "threads=abc"], "threads must be an int or None, not str"),
    (["head", "{f}", "--columns", ","], "--columns names no column: ','"),
    (["info", "{f}", "--option", "nope=1"], "--option nope: no format takes it"),
    (["info", "{f}", "--option", "format=spectro"], "--option format: use --format instead"),
    (["convert", "{f}", "-o", "{out}", "--option", "nope=1"],
     "unexpected option(s) for read_spectro: ['nope']"),
    (["convert", "{f}", "-o", "{out}", "--option", "progress=true"],
     "--option progress: use --progress instead"),
    (["convert", "{f}", "-o", "{out}", "--option", "chunksize=5"],
     "--option chunksize: bindf convert sets chunksize itself"),
    (["follow", "{f}", "-o", "{out}", "--option", "poll_interval=1"],
     "--option poll_interval: use --poll-interval instead"),
    (["follow", "{f}", "-o", "{out}", "--option", "nope=1", "--idle-timeout", "0.1", "-q"],
     "follow() got an unexpected option (keyword argument) 'nope'"),
    (["follow", "{f}", "--columns", "nope", "--idle-timeout", "0.1", "-q"],
     "{f}: unknown column(s) ['nope']; available: ['event', 'microtime_ns', 'macrotime_ns', "
     "'channel', 'marker']"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path: Path, capsys, args: list[str],
                                               message: str) -> None:
    f = write_stt1(tmp_path / "a.bin", n=10)
    out = tmp_path / "out.parquet"
    argv = [a.format(f=f, out=out) for a in args]
    assert run(*argv) == cli.EX_USAGE
    assert _one_line_error(capsys) == f"bindf: error: {message.format(f=f)}"
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_columns_that_one_input_lacks_are_refused_before_any_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--output-dir`` with ``--columns`` that one input lacks (an AstroPix 3 run has no
    ``row``): the error names that input, and no output is written (the first input's
    was, and the error named no file)."""
    from importlib import resources

    samples = resources.files("bindf") / "samples"
    runs = tmp_path / "in"
    runs.mkdir()
    (runs / "a_run.apx").write_bytes((samples / "astropix_threshold_scan.apx").read_bytes())
    (runs / "b_run.apx").write_bytes((samples / "astropix3_injection_run.apx").read_bytes())
    out = tmp_path / "out"
    assert run("convert", str(runs / "*.apx"), "--output-dir", str(out), "--columns",
               "row,tot_us", "-q") == cli.EX_USAGE
    assert _one_line_error(capsys).startswith(
        f"bindf: error: {runs / 'b_run.apx'}: unknown column(s) ['row']")
    assert not out.exists() or list(out.iterdir()) == []


def test_records_without_dtype_is_a_usage_error(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(100)))
    for command in ("head", "info"):
        assert run(command, str(junk), "--format", "records") == cli.EX_USAGE
        assert _one_line_error(capsys) == "bindf: error: read_records needs dtype="


def test_convert_takes_the_common_read_options(tmp_path: Path) -> None:
    f = write_stt1(tmp_path / "a.bin", n=100)
    out = tmp_path / "out.parquet"
    assert run("convert", str(f), "-o", str(out), "-q", "--option", "n_rows=7",
               "--option", "include_file_paths=path") == 0
    got = pl.read_parquet(out)
    assert got.height == 7 and got["path"].unique().to_list() == [str(f)]


@pytest.mark.parametrize(("args", "message"), [
    (["head", "{f}", "-n", "-1"], "argument -n: must be 0 or more, not -1"),
    (["head", "{f}", "-n", "x"], "argument -n: expected a whole number, not 'x'"),
    (["follow", "{f}", "--poll-interval", "0"],
     "argument --poll-interval: must be a positive number of seconds, not '0'"),
    (["follow", "{f}", "--poll-interval", "inf"],
     "argument --poll-interval: must be a positive number of seconds, not 'inf'"),
    (["follow", "{f}", "--idle-timeout", "-1"],
     "argument --idle-timeout: must be 0 or more seconds, not '-1'"),
    (["follow", "{f}", "--idle-timeout", "nan"],
     "argument --idle-timeout: must be 0 or more seconds, not 'nan'"),
    (["follow", "{f}", "--status-interval", "-0.5"],
     "argument --status-interval: must be 0 or more seconds, not '-0.5'"),
])
def test_out_of_range_arguments_are_usage_errors(tmp_path: Path, capsys, args: list[str],
                                                 message: str) -> None:
    f = write_stt1(tmp_path / "a.bin", n=10)
    with pytest.raises(SystemExit) as exc:
        run(*[a.format(f=f) for a in args])
    assert exc.value.code == cli.EX_USAGE
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")


def test_output_in_an_encoding_without_box_drawing(stt1_files: list[Path]) -> None:
    """Under PYTHONIOENCODING=ascii (or a console code page), the table's box drawing
    failed the command with "'ascii' codec can't encode" and exit 2: the table is drawn
    in ASCII, and other text the encoding cannot show is escaped."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "bindf", "head", str(stt1_files[0]), "-n", "2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith("+---") and "| event" in done.stdout
    demo = subprocess.run([sys.executable, "-m", "bindf", "demo"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "rows \\xd7 " in demo.stdout  # the demo's "×", escaped


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_binary_output_is_never_written_to_a_terminal(stt1_files: list[Path]) -> None:
    """-o - on a terminal was refused, -o /dev/stdout (the same terminal) was not: 31 KB
    of Parquet on the screen. A pipe takes both."""
    import pty

    main_end, terminal = pty.openpty()
    try:
        for output in ("-", "/dev/stdout"):
            done = subprocess.run([sys.executable, "-m", "bindf", "convert", str(stt1_files[0]),
                                   "--to", "parquet", "-o", output], stdout=terminal,
                                  stderr=subprocess.PIPE, text=True, timeout=120)
            assert done.returncode == 2 and "to a terminal" in done.stderr, done.stderr
    finally:
        os.close(main_end)
        os.close(terminal)
    piped = subprocess.run([sys.executable, "-m", "bindf", "convert", str(stt1_files[0]),
                            "--to", "parquet", "-o", "/dev/stdout"], capture_output=True,
                           timeout=120)
    assert piped.returncode == 0 and piped.stdout[:4] == b"PAR1"


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="no /proc/self/fd")
def test_a_descriptor_path_is_written_through(stt1_files: list[Path], tmp_path: Path) -> None:
    """-o /dev/stdout redirected to a file stats as that regular file: it was "output
    exists", and with --force a link to it (or /dev/stdout itself) was replaced by a
    file while the redirection got nothing."""
    link = tmp_path / "mystdout"
    link.symlink_to("/proc/self/fd/1")
    for output, extra in (("/dev/stdout", []), (str(link), ["--force"])):
        target = tmp_path / "out.parquet"
        with open(target, "wb") as out:
            done = subprocess.run([sys.executable, "-m", "bindf", "convert", str(stt1_files[0]),
                                   "--to", "parquet", "-o", output, *extra], stdout=out,
                                  stderr=subprocess.PIPE, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert pq.read_table(target).num_rows == bindf.read(stt1_files[0]).shape[0]
    assert link.is_symlink()


def test_head_zero_rows_shows_the_columns(tmp_path: Path, capsys) -> None:
    f = write_stt1(tmp_path / "a.bin", n=10)
    assert run("head", str(f), "-n", "0") == 0
    assert "shape: (0, 5)" in capsys.readouterr().out


# -- convert --output-dir and output checks ---------------------------------------------
@pytest.mark.parametrize(("names", "collide"), [
    (["a/run.bin", "b/run.bin"], "a/run.bin and b/run.bin would both"),
    (["x.apx", "x.bin", "y.bin"], "x.apx and x.bin would both"),
    (["a/run.bin", "b/Run.bin", "c/RUN.bin"], "a/run.bin, b/Run.bin, c/RUN.bin would all"),
])
def test_output_dir_refuses_inputs_that_share_an_output_name(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, names: list[str],
        collide: str) -> None:
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_stt1(tmp_path / name, n=10)
    monkeypatch.chdir(tmp_path)
    for force in ([], ["--force"]):
        assert run("convert", *names, "--output-dir", "dd", *force) == cli.EX_USAGE
        output = os.path.join("dd", os.path.splitext(os.path.basename(names[0]))[0]
                              + ".parquet")
        assert _one_line_error(capsys) == (
            f"bindf: error: inputs {collide} be written to {output}; convert them in "
            "separate runs (or into one file with -o)")
        assert not (tmp_path / "dd").exists()


def test_output_dir_names_archive_members_after_themselves(tmp_path: Path) -> None:
    """The members of a zip archive were named after the archive (`r2.parquet`), so two
    of them collided; each is named after itself, as `bindf info` names it."""
    import zipfile

    runs = [write_stt1(tmp_path / f"run{i}.bin", n=10 + i, seed=i) for i in (1, 2)]
    with zipfile.ZipFile(tmp_path / "r2.zip", "w") as archive:
        for path in runs:
            archive.write(path, path.name)
    out = tmp_path / "out"
    assert run("convert", f"zip://*.bin::{tmp_path / 'r2.zip'}", "--output-dir", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["run1.parquet", "run2.parquet"]
    for path in runs:
        assert pq.read_table(out / f"{path.stem}.parquet").num_rows == len(bindf.read(path))


def test_output_dir_that_is_a_file(tmp_path: Path, capsys) -> None:
    f = write_stt1(tmp_path / "a.bin", n=10)
    not_a_dir = tmp_path / "out.parquet"
    not_a_dir.write_bytes(b"precious")
    for force in ([], ["--force"]):
        assert run("convert", str(f), "--output-dir", str(not_a_dir), *force) == cli.EX_IOERR
        assert _one_line_error(capsys) == (
            f"bindf: error: --output-dir {not_a_dir}: exists and is not a folder")
    assert not_a_dir.read_bytes() == b"precious"


def test_convert_checks_every_output_before_writing_any(stt1_files: list[Path],
                                                         tmp_path: Path, capsys) -> None:
    outdir = tmp_path / "pq"
    outdir.mkdir()
    (outdir / "run1.parquet").write_bytes(b"precious")
    assert run("convert", *map(str, stt1_files), "--output-dir", str(outdir)) == cli.EX_CANTCREAT
    assert _one_line_error(capsys) == (
        f"bindf: error: {outdir / 'run1.parquet'}: output exists (use --force to replace it)")
    assert sorted(p.name for p in outdir.iterdir()) == ["run1.parquet"]
    assert run("convert", *map(str, stt1_files), "--output-dir", str(outdir), "-q",
               "--force") == 0
    assert pl.read_parquet(outdir / "run1.parquet").height == 500


def test_output_problems_name_the_output(tmp_path: Path, capsys) -> None:
    f = write_stt1(tmp_path / "a.bin", n=10)
    missing = tmp_path / "no" / "x.parquet"
    assert run("convert", str(f), "-o", str(missing)) == cli.EX_IOERR
    assert _one_line_error(capsys) == (
        f"bindf: error: {missing}: cannot write: no folder {str(missing.parent)!r}")
    assert run("convert", str(f), "-o", str(tmp_path), "--to", "csv", "--force") == cli.EX_IOERR
    assert _one_line_error(capsys) == f"bindf: error: {tmp_path}: cannot write: it is a folder"


def test_output_that_appears_while_writing_is_kept(tmp_path: Path, capsys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --force, a file created at the destination during the conversion is not
    replaced (the output is linked into place, which fails if the name is taken)."""
    from bindf.frontends.batches import ReadPlan

    f = write_stt1(tmp_path / "a.bin", n=10)
    out = tmp_path / "out.parquet"
    batches = ReadPlan.iter_batches

    def and_meanwhile(self):  # noqa: ANN001, ANN202
        yield from batches(self)
        out.write_bytes(b"another writer")

    monkeypatch.setattr(ReadPlan, "iter_batches", and_meanwhile)
    assert run("convert", str(f), "-o", str(out)) == cli.EX_CANTCREAT
    assert _one_line_error(capsys) == (
        f"bindf: error: {out}: output exists (use --force to replace it)")
    assert out.read_bytes() == b"another writer"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "out.parquet"]


def test_convert_no_fsync(stt1_files: list[Path], tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each output is fsynced once before it is published; --no-fsync skips that (many
    small files), and the outputs are the same."""
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd))[1])
    assert run("convert", *map(str, stt1_files), "--output-dir", str(tmp_path / "a"), "-q") == 0
    assert len(synced) == len(stt1_files)
    synced.clear()
    assert run("convert", *map(str, stt1_files), "--output-dir", str(tmp_path / "b"), "-q",
               "--no-fsync") == 0
    assert synced == []
    for source in stt1_files:
        name = source.with_suffix(".parquet").name
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))


# -- atomic output ----------------------------------------------------------------------
def test_atomic_path_fsyncs_before_publishing(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from bindf import _atomic

    events: list[str] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), replace(a, b))[1])
    dest = tmp_path / "out.bin"
    with _atomic.atomic_path(dest) as tmp:
        Path(tmp).write_bytes(b"data")
    assert events == ["fsync", "replace"] and dest.read_bytes() == b"data"


@pytest.mark.parametrize(("signum", "handler", "raised"), [
    ("SIGTERM", cli._raise_terminated, cli.Terminated),
    ("SIGINT", cli._raise_interrupted, KeyboardInterrupt),
])
def test_a_signal_while_the_temporary_file_is_made_leaves_nothing(
        tmp_path: Path, monkeypatch, signum: str, handler: object,
        raised: type[BaseException]) -> None:
    """SIGTERM or Ctrl-C right after the temporary file is created, with the ``bindf``
    command's handlers: the exception arrives once the file is recorded (whichever
    thread the signal was delivered to), so the file is removed."""
    import signal
    import threading

    from bindf import _atomic

    real = _atomic._temporary_file
    number = getattr(signal, signum)

    def made_then_signalled(dest: str) -> tuple[int, str]:
        made = real(dest)
        # as when the signal reaches another thread: the handler runs in this one at once
        handler(number, None)  # type: ignore[operator]
        return made

    monkeypatch.setattr(_atomic, "_temporary_file", made_then_signalled)
    for open_output in (_atomic.atomic_output, _atomic.atomic_path):
        with pytest.raises(raised), open_output(tmp_path / "out.bin"):
            pass
        assert os.listdir(tmp_path) == []
    assert threading.current_thread() is threading.main_thread()


def test_signal_deferral_is_per_thread(tmp_path: Path) -> None:
    """Another thread making an output does not make the main thread's handler wait (the
    handler's exception belongs to the main thread, and the other thread's step cannot
    be interrupted by it); the main thread's own step does, and runs the action after."""
    import threading

    from bindf import _atomic

    inside, release = threading.Event(), threading.Event()

    def other_thread_output() -> None:
        with _atomic._signals_held():  # as if making its temporary file right now
            inside.set()
            release.wait(10)
        with _atomic.atomic_output(tmp_path / "other.bin") as f:
            f.write(b"x")

    worker = threading.Thread(target=other_thread_output)
    worker.start()
    try:
        assert inside.wait(10)
        ran: list[int] = []
        with _atomic._signals_held():
            assert _atomic.defer_while_held(lambda: ran.append(1))
            assert ran == []
        assert ran == [1]
        # the worker is still inside its step, yet nothing is deferred here
        assert not _atomic.defer_while_held(lambda: ran.append(2))
        assert ran == [1]
    finally:
        release.set()
        worker.join()
    assert (tmp_path / "other.bin").read_bytes() == b"x"


def test_atomic_no_overwrite_is_race_free(tmp_path: Path) -> None:
    from bindf._atomic import OutputExistsError, atomic_output, atomic_path

    for opener in (atomic_output, atomic_path):
        dest = tmp_path / f"{opener.__name__}.bin"
        with pytest.raises(OutputExistsError) as exc, opener(dest, overwrite=False) as f:
            dest.write_bytes(b"another writer")  # appears after the up-front check
            if isinstance(f, str):
                Path(f).write_bytes(b"mine")
            else:
                f.write(b"mine")
        assert str(exc.value) == f"{dest}: output exists (pass overwrite=True to replace it)"
        assert exc.value.path == str(dest)
        assert dest.read_bytes() == b"another writer"
    assert sorted(os.listdir(tmp_path)) == ["atomic_output.bin", "atomic_path.bin"]


def test_atomic_no_overwrite_without_hard_links(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from bindf._atomic import atomic_output

    def no_links(src, dst):  # noqa: ANN001, ANN202 - as on FAT
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    dest = tmp_path / "out.bin"
    with atomic_output(dest, overwrite=False) as f:
        f.write(b"data")
    assert dest.read_bytes() == b"data" and os.listdir(tmp_path) == ["out.bin"]


# -- signals (in a subprocess) ----------------------------------------------------------
@pytest.mark.parametrize(("signum", "code", "message"), [
    ("SIGTERM", cli.EX_TERMINATED, "bindf: terminated"),
    ("SIGINT", cli.EX_INTERRUPTED, "bindf: interrupted"),
])
def test_signal_while_converting_leaves_nothing(tmp_path: Path, signum: str, code: int,
                                                message: str) -> None:
    import signal
    import time

    big = write_stt1(tmp_path / "big.bin", n=1_500_000)
    out = tmp_path / "big.csv"
    proc = subprocess.Popen([sys.executable, "-m", "bindf", "convert", str(big), "-o", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]:  # writing
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err.strip() == message, err
    assert os.listdir(tmp_path) == ["big.bin"]



def test_a_signal_whose_exception_python_swallowed_is_sent_again() -> None:
    """Ctrl-C that lands in a weakref callback or ``__del__`` (CI: the import system's
    module-lock callback) raised KeyboardInterrupt where Python only reports it
    ("Exception ignored in …"): the command ran to the end and exited 0. The command
    sends the signal again, so that its handler raises where it counts."""
    import gc
    import signal

    received = []

    class RaisesWhenFreed:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        with cli.signals_not_swallowed():
            thing = RaisesWhenFreed()
            del thing
            gc.collect()
            for _ in range(100):  # (the handler runs at the next bytecode boundary)
                if received:
                    break
    finally:
        signal.signal(signal.SIGINT, previous)
    assert received == [signal.SIGINT]

def test_unknown_format_is_a_usage_error(tmp_path: Path, capsys) -> None:
    f = write_stt1(tmp_path / "a.bin", n=10)
    for args in (["head", str(f)], ["info", str(f)],
                 ["convert", str(f), "-o", str(tmp_path / "x.parquet")],
                 ["follow", str(f), "--idle-timeout", "0.1", "-q"]):
        for name in ("nope", ""):  # ("" names no format, as in the Python functions)
            assert run(*args, "--format", name) == cli.EX_USAGE
            assert _one_line_error(capsys).startswith(
                f"bindf: error: unknown format {name!r}; ")


# -- outputs that cannot hold every column, metadata learned while reading ---------------------


def test_convert_to_csv_writes_binary_as_hex(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "frames.csv"
    assert run("convert", str(data_dir / "quad_chip_data.bin"), "-o", str(out)) == 0
    assert f"→ {out} (2004 rows, csv)" in capsys.readouterr().err
    sensor = pl.read_csv(out)["sensor"]
    assert sensor.dtype == pl.String
    assert sensor[:3].to_list() == ["0x1162", "0x1c910b00ca", "0x1c910b00e8"]
    expected = bindf.read_astep(data_dir / "quad_chip_data.bin", columns=["sensor"])["sensor"]
    assert [bytes.fromhex(cell[2:]) for cell in sensor] == expected.tolist()


def test_convert_to_csv_refuses_list_columns_as_bad_data(data_dir: Path, tmp_path: Path,
                                                         capsys) -> None:
    out = tmp_path / "wide.csv"
    status = run("convert", str(data_dir / "sp01_decay_curves_example.bin"),
                 "--option", "shape=wide", "-o", str(out))
    assert status == cli.EX_DATAERR == 65  # not 2: the command line is right
    assert capsys.readouterr().err == (
        f"bindf: error: {out}: CSV holds one value per cell, not the list column(s) "
        "['ch2', 'ch4']; write Parquet or Arrow IPC instead (a .parquet or .arrow output, or "
        "--to parquet|ipc), or leave them out with --columns time_ns\n")
    assert os.listdir(tmp_path) == []  # refused before anything was written
    assert run("convert", str(data_dir / "sp01_decay_curves_example.bin"), "--option",
               "shape=wide", "--columns", "time_ns", "-o", str(out), "-q") == 0
    assert pl.read_csv(out).columns == ["time_ns"]


def test_arrow_output_keeps_the_damage_count_like_parquet(data_dir: Path,
                                                         tmp_path: Path) -> None:
    import pyarrow as pa
    from test_on_error import apx_readout_offsets

    data = bytearray((data_dir / "20250723_092534_data.apx").read_bytes())
    offset, size = apx_readout_offsets(bytes(data))[3]
    data[offset + 1] ^= 0xFF  # the readout marker
    bad = tmp_path / "bad.apx"
    bad.write_bytes(bytes(data))
    expected = {"bad_readout_marker": 1, "skipped_bytes": size}
    for name in ("skip.parquet", "skip.arrow"):
        assert run("convert", str(bad), "-o", str(tmp_path / name), "-q",
                   "--option", "on_error=skip") == 0
    parquet = bindf.read_parquet(tmp_path / "skip.parquet", output="arrow")
    with pa.ipc.open_file(tmp_path / "skip.arrow") as reader:
        ipc = reader.read_all()
    assert bindf.arrow.table_info(parquet)["errors"] == expected
    assert bindf.arrow.table_info(ipc)["errors"] == expected
    assert ipc.equals(parquet)
    # The Parquet file's Arrow schema (what pyarrow, pandas, polars and DuckDB read)
    # has the final count too, not only the footer's key-value list.
    for schema in (pq.read_schema(tmp_path / "skip.parquet"),
                   pq.read_table(tmp_path / "skip.parquet").schema):
        assert json.loads(schema.metadata[b"bindf.errors"]) == expected
    assert sorted(os.listdir(tmp_path)) == ["bad.apx", "skip.arrow", "skip.parquet"]


@pytest.mark.parametrize("kind", ["csv", "ipc", "parquet"])
def test_convert_to_standard_output(stt1_files: list[Path], tmp_path: Path, kind: str) -> None:
    """``-o -`` is standard output (with ``--to``): CSV, the Arrow IPC *stream* format
    (what a pipe carries) and Parquet, written as they come; it once wrote a file named
    ``-``. A reader of the pipe that stops early (``| head``) is not an error."""
    import io

    import pyarrow as pa

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-m", "bindf", "convert", str(stt1_files[0]),
                           "--to", kind, "-o", "-"], capture_output=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert b"standard output (1000 rows" in done.stderr and list(cwd.iterdir()) == []
    expected = bindf.read(stt1_files[0], output="arrow")
    if kind == "csv":
        got = pl.read_csv(done.stdout)["macrotime_ns"].to_list()
    elif kind == "ipc":
        table = pa.ipc.open_stream(done.stdout).read_all()
        assert json.loads(table.schema.metadata[b"bindf.header"]) == \
            json.loads(expected.schema.metadata[b"bindf.header"])
        got = table["macrotime_ns"].to_pylist()
    else:
        got = pq.read_table(io.BytesIO(done.stdout))["macrotime_ns"].to_pylist()
    assert got == expected["macrotime_ns"].to_pylist()
    big = write_stt1(tmp_path / "big.bin", 400_000)
    piped = subprocess.run(f'"{sys.executable}" -m bindf convert "{big}" --to csv -o - | head -2',
                           shell=True, capture_output=True)
    assert piped.stdout.count(b"\n") == 2 and piped.stderr == b""


def test_standard_output_needs_a_type_and_special_files_are_streamed(
        stt1_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``-o -`` without ``--to`` says so (exit 2); an existing device such as
    ``/dev/null`` is written through, never replaced by a file (``--force`` would
    have renamed a file over it), and the library writers refuse to replace it."""
    assert run("convert", str(stt1_files[0]), "-o", "-") == 2
    assert "standard output (-o -) has no extension" in capsys.readouterr().err
    if not os.path.exists("/dev/null") or sys.platform == "win32":
        pytest.skip("no /dev/null")
    before = os.stat("/dev/null")
    assert run("convert", str(stt1_files[0]), "--to", "csv", "-o", "/dev/null", "-q") == 0
    assert run("convert", str(stt1_files[0]), "--to", "csv", "-o", "/dev/null", "-q",
               "--force") == 0
    with pytest.raises(OSError, match="a device, pipe or socket"):
        bindf.to_parquet(bindf.read(stt1_files[0]), "/dev/null")
    after = os.stat("/dev/null")
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_head_prints_one_line_per_row_in_full(data_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Piped or redirected (not a terminal), ``head`` squeezed every column into 100
    characters: a 19-digit time stamp came out over six lines."""
    assert run("head", str(data_dir / "20250723_092534_data.apx"), "-n", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 7  # shape, top, names, ---, dtypes, ═, 2 rows, bottom
    assert "1753255536707629800" in lines[6] and "1753255536785609300" in lines[7]
    assert "tot_us" in lines[2]


def test_info_json_is_a_list_for_a_glob_of_one_file(stt1_files: list[Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A glob gives a list even when it matches one file (it gave an object then, a list
    for two), one named file an object."""
    assert run("info", str(tmp_path / "run0*.bin"), "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert isinstance(listed, list) and [r["path"] for r in listed] == [str(stt1_files[0])]
    assert run("info", str(stt1_files[0]), str(stt1_files[1]), "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert run("info", str(stt1_files[0]), "--json") == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(stt1_files[0])


@pytest.mark.parametrize("command, option, message", [
    ("convert", "colums=row", "--option colums: no such option; did you mean --columns?"),
    ("head", "n_row=3", "--option n_row: no such option; did you mean -n?"),
    ("head", "nrows=3", "--option nrows: use -n instead"),
    ("info", "columns=ch2", "--option columns: bindf info reads headers only"),
])
def test_option_hints_use_the_command_line_spelling(stt1_files: list[Path], tmp_path: Path,
                                                    command: str, option: str, message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A near miss of an option the command sets itself names the flag (the reader
    said "did you mean columns=?", which the CLI then refused; info suggested the
    option itself)."""
    extra = ["-o", str(tmp_path / "x.parquet")] if command == "convert" else []
    assert run(command, str(stt1_files[0]), *extra, "--option", option) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_formats_lists_every_format_with_how_it_is_found(capsys) -> None:
    from bindf.cli import main

    assert main(["formats"]) == 0
    text = capsys.readouterr().out
    assert "apx: AstroPix binary run" in text and "detected by: magic %APXDF, *.apx" in text
    assert "option layout: Literal[\"dense\", \"sparse\"] | None" in text
    assert "tpl  (plugin)" in text  # the tests' entry-point plugin
    assert main(["formats", "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["it02"]["magics"] == ["IT02"] and listed["it02"]["writer"]
    assert listed["astep"]["probe"] and not listed["astep"]["plugin"]
    assert "records" not in listed  # read_records is bindf's own function, not a format
