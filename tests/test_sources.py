"""Sources that are not paths: bytes, file objects (seekable or not), fsspec OpenFiles,
standard input. Every format read from each of them equals the read of its path."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from format_cases import Case

import bindf
from bindf import _file_objects
from bindf._file_objects import ObjectSource
from bindf._inputs import expand_sources
from bindf.arrow import table_info


@pytest.fixture
def cases(format_cases: dict[str, Case]) -> dict[str, Case]:
    return format_cases  # conftest.py: a small file of every format


@pytest.fixture
def case(format_case: Case) -> Case:
    return format_case  # conftest.py: each format in turn


def read_arrow(source: Any, case: Case, **kwargs: Any) -> pa.Table:
    return bindf.read(source, output="arrow", **case.kwargs, **kwargs)


def assert_same_read(got: pa.Table, expected: pa.Table, source_name: str) -> None:
    """Same rows, same schema, same header; only the metadata's ``source`` differs."""
    assert got.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))
    got_info, expected_info = table_info(got), table_info(expected)
    assert got_info["header"] == expected_info["header"]
    assert got_info["format"] == expected_info["format"]
    assert got_info["source"] == source_name


def pipe_of(data: bytes) -> tuple[io.BufferedReader, threading.Thread]:
    """A non-seekable stream of ``data``: the read end of an OS pipe, fed by a thread
    (so the pipe's capacity never limits the size)."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as out:
            out.write(data)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return os.fdopen(read_fd, "rb"), thread


class ReadOnly:
    """A minimal binary stream: ``read`` and nothing else (no seek, tell or readinto)."""

    def __init__(self, data: bytes, piece: int = 1000) -> None:
        self._data = io.BytesIO(data)
        self._piece = piece

    def read(self, n: int = -1) -> bytes:
        return self._data.read(min(n, self._piece) if n >= 0 else self._piece)


# -- every format, every kind of source ---------------------------------------------------
def test_bytesio_equals_path(case: Case) -> None:
    expected = read_arrow(case.path, case)
    buffer = io.BytesIO(case.path.read_bytes())
    assert_same_read(read_arrow(buffer, case), expected, "<BytesIO>")
    assert not buffer.closed


def test_pipe_equals_path(case: Case) -> None:
    expected = read_arrow(case.path, case)
    stream, thread = pipe_of(case.path.read_bytes())
    with stream:
        assert not stream.seekable()
        got = read_arrow(stream, case)
        assert not stream.closed  # bindf does not close what it did not open
    thread.join()
    assert_same_read(got, expected, "<BufferedReader>")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_path_is_read_as_a_stream(case: Case, tmp_path: Path) -> None:
    """A FIFO (a shell's ``<(command)``, ``mkfifo``) stats as 0 bytes: it was read as
    "file is empty". It is a stream, read like a pipe object; the metadata names it."""
    expected = read_arrow(case.path, case)
    fifo = tmp_path / "run.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as out:
            out.write(case.path.read_bytes())

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    got = read_arrow(str(fifo), case)
    thread.join()
    assert_same_read(got, expected, str(fifo))


def test_a_directory_is_named_wherever_it_is_in_a_list(cases: dict[str, Case],
                                                      tmp_path: Path) -> None:
    """A directory in a list was "[Errno 21] Is a directory", naming no path."""
    case = next(iter(cases.values()))
    for source in (tmp_path, [case.path, tmp_path]):
        with pytest.raises(IsADirectoryError, match="give a glob") as info:
            bindf.read(source, **case.kwargs)
        assert info.value.filename == str(tmp_path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_path_is_refused() -> None:
    for device in ("/dev/zero", "/dev/null"):
        with pytest.raises(OSError, match="not a regular file or a pipe") as info:
            bindf.read(device)
        assert info.value.filename == device
        with pytest.raises(OSError, match="not a regular file"):
            bindf.read_header(device)
    from bindf.cli import EX_NOINPUT, main

    assert main(["info", "/dev/zero"]) == EX_NOINPUT  # an input that cannot be read


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like(case: Case, kind: type) -> None:
    expected = read_arrow(case.path, case)
    assert_same_read(read_arrow(kind(case.path.read_bytes()), case), expected,
                     f"<{kind.__name__}>")


def test_read_only_stream(case: Case) -> None:
    """An object with nothing but ``read`` (short reads included)."""
    expected = read_arrow(case.path, case)
    assert_same_read(read_arrow(ReadOnly(case.path.read_bytes()), case), expected, "<ReadOnly>")


class NoSeekToEnd(io.BytesIO):
    """Claims to seek, but not relative to the end (some HTTP file objects)."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            raise io.UnsupportedOperation("cannot seek from the end")
        return super().seek(offset, whence)


def test_object_that_cannot_seek_to_its_end_is_read_as_a_stream(cases: dict[str, Case]) -> None:
    case = cases["it02_sparse"]
    data = case.path.read_bytes()
    buffer = NoSeekToEnd(b"junk" + data)
    buffer.seek(4)
    assert_same_read(read_arrow(buffer, case), read_arrow(case.path, case), "<NoSeekToEnd>")



def test_a_stream_with_tell_but_no_seek_is_read_as_a_stream(cases: dict[str, Case]) -> None:
    """A hand-written body wrapper with ``read`` and ``tell`` but a ``seek`` that fails
    (and no ``seekable``): the seek back after the failed seek to its end escaped as
    io.UnsupportedOperation."""
    case = cases["it02_sparse"]

    class Body:
        name = "http-body"

        def __init__(self, data: bytes) -> None:
            self._buffer = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._buffer.read(n)

        def tell(self) -> int:
            return self._buffer.tell()

        def seek(self, *args: object) -> int:
            raise io.UnsupportedOperation("seek")

    got = read_arrow(Body(case.path.read_bytes()), case)
    assert_same_read(got, read_arrow(case.path, case), "http-body")



def test_a_buffered_stream_with_only_read_is_copied(cases: dict[str, Case]) -> None:
    """An io.BufferedIOBase subclass that defines read() alone inherits a readinto1 that
    calls the read1 it lacks: the copy of a stream, which prefers readinto1, failed with
    io.UnsupportedOperation; it falls back to readinto (which calls read)."""
    case = cases["it02_sparse"]

    class OnlyRead(io.BufferedIOBase):
        def __init__(self, data: bytes) -> None:
            self._buffer = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, n: int | None = -1) -> bytes:
            return self._buffer.read(n)

    got = read_arrow(OnlyRead(case.path.read_bytes()), case)
    assert_same_read(got, read_arrow(case.path, case), "<OnlyRead>")


def test_a_decompressing_stream_over_a_pipe_that_cannot_seek_back_says_so(
        cases: dict[str, Case]) -> None:
    """gzip over a pipe, cut: seeking to its end reads up to the cut and fails, and it
    cannot seek back; the copy then began at the cut ("file is empty"). It is an error
    saying the object cannot seek back."""
    import gzip

    packed = gzip.compress(cases["it02_sparse"].path.read_bytes())
    stream, thread = pipe_of(packed[: len(packed) // 2])
    with stream, gzip.GzipFile(fileobj=stream) as f:
        with pytest.raises(bindf.BindfError, match="cannot seek back"):
            bindf.read(f)
    thread.join()

def test_a_closed_file_object_is_a_bindf_error_with_its_name(case: Case, tmp_path: Path
                                                              ) -> None:
    """Closed before the read (a ``with`` block that ended), or while its chunks were
    being read: a bare ValueError ("readinto of closed file", "seek of closed file")
    with no name and no offset."""
    with open(case.path, "rb") as f:
        pass
    for call in (lambda: bindf.read(f, **case.kwargs), lambda: bindf.read_header(f),
                 lambda: bindf.scan(f, **case.kwargs).collect()):
        with pytest.raises(bindf.BindfError, match="file object is closed") as info:
            call()
        assert info.value.path == str(case.path)


def test_a_file_object_closed_during_a_chunked_read_is_a_bindf_error(tmp_path: Path) -> None:
    one = bindf.read_it02(Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin")
    path = tmp_path / "long.bin"
    bindf.write_it02(path, pd.concat([one] * 3000, ignore_index=True), one.bindf.header)
    f = open(path, "rb")  # noqa: SIM115 - closed in the middle of the read, on purpose
    chunks = bindf.read(f, chunksize=1000)
    next(chunks)
    f.close()
    with pytest.raises(bindf.BindfError, match="closed while bindf read it") as info:
        list(chunks)
    assert info.value.path == str(path) and info.value.offset > 0

def test_open_file_is_read_from_current_position(case: Case, tmp_path: Path) -> None:
    junk = b"not part of the data" * 7
    path = tmp_path / ("prefixed" + case.path.suffix)
    path.write_bytes(junk + case.path.read_bytes())
    with open(path, "rb") as f:
        f.seek(len(junk))
        got = read_arrow(f, case)
        assert not f.closed
    assert_same_read(got, read_arrow(case.path, case), str(path))


def test_chunked_and_batches_from_a_pipe(case: Case) -> None:
    expected = read_arrow(case.path, case)
    stream, thread = pipe_of(case.path.read_bytes())
    with stream:
        batches = list(bindf.iter_batches(stream, batch_size=37, **case.kwargs))
    thread.join()
    assert all(b.num_rows <= 37 for b in batches)
    got = pa.Table.from_batches(batches).replace_schema_metadata(None)
    assert got.equals(expected.replace_schema_metadata(None))


def test_read_header_of_buffer(case: Case) -> None:
    options = {k: v for k, v in case.kwargs.items()}
    assert (bindf.read_header(io.BytesIO(case.path.read_bytes()), **options)
            == bindf.read_header(case.path, **options))


def test_scan_of_buffer_collects_twice(case: Case) -> None:
    """A scan remembers the start of its file object; a second collect reads it again."""
    expected = pl.from_arrow(read_arrow(case.path, case))
    stream, thread = pipe_of(case.path.read_bytes())
    with stream:
        lazy = bindf.scan(stream, **case.kwargs)
        first = lazy.collect()
        second = lazy.select(case.projection).collect()
    thread.join()
    assert first.equals(expected)
    assert second.equals(expected.select(case.projection))


def test_truncated_stream_warns_and_keeps_complete_records(case: Case, tmp_path: Path) -> None:
    """A stream cut short behaves like a file cut short: same warning, same rows."""
    data = case.path.read_bytes()
    cut = tmp_path / ("cut" + case.path.suffix)
    cut.write_bytes(data[: len(data) - 5])
    with pytest.warns(bindf.BindfWarning) as from_path:
        expected = read_arrow(cut, case)
    stream, thread = pipe_of(data[: len(data) - 5])
    with stream, pytest.warns(bindf.BindfWarning) as from_stream:
        got = read_arrow(stream, case)
    thread.join()
    assert plain_equal(got, expected)
    assert [type(w.message) for w in from_stream] == [type(w.message) for w in from_path]
    assert all(w.message.path == "<BufferedReader>" for w in from_stream)


def plain_equal(a: pa.Table, b: pa.Table) -> bool:
    return a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))


# -- fsspec, archives, several objects -----------------------------------------------------
def test_fsspec_open_file(cases: dict[str, Case]) -> None:
    fsspec = pytest.importorskip("fsspec")
    case = cases["apx"]
    fs = fsspec.filesystem("memory")
    fs.pipe("/sources/run.apx", case.path.read_bytes())
    with fsspec.open("memory://sources/run.apx", "rb") as f:  # an fsspec file object
        assert_same_read(read_arrow(f, case), read_arrow(case.path, case),
                         f.name if isinstance(getattr(f, "name", None), str) else "<MemoryFile>")
    opened = fsspec.open("memory://sources/run.apx", "rb")  # an OpenFile, not yet opened
    assert_same_read(read_arrow(opened, case), read_arrow(case.path, case),
                     "memory:///sources/run.apx")


def test_fsspec_compressed_open_file(cases: dict[str, Case], tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    case = cases["it02_sparse"]
    packed = tmp_path / "run.bin.gz"
    packed.write_bytes(gzip.compress(case.path.read_bytes()))
    opened = fsspec.open(str(packed), "rb", compression="gzip")
    got = read_arrow(opened, case)
    assert got.replace_schema_metadata(None).equals(
        read_arrow(case.path, case).replace_schema_metadata(None))


def test_zip_member(cases: dict[str, Case], tmp_path: Path) -> None:
    """FLIM LABS ships its examples as zip archives."""
    case = cases["it02_dense"]
    archive = tmp_path / "examples.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(case.path, "export/data.bin")
    with zipfile.ZipFile(archive) as z, z.open("export/data.bin") as member:
        got = bindf.read_it02(member, output="arrow")
    assert_same_read(got, read_arrow(case.path, case), "export/data.bin")


def test_several_objects_in_one_read(cases: dict[str, Case]) -> None:
    case = cases["spectro_stt1"]
    data = case.path.read_bytes()
    got = bindf.read([io.BytesIO(data), data], output="arrow", include_file_paths="from")
    single = read_arrow(case.path, case)
    assert got.num_rows == 2 * single.num_rows
    assert got["from"].unique().to_pylist() == ["<BytesIO>", "<bytes>"]
    assert table_info(got)["source"] == ["<BytesIO>", "<bytes>"]


def test_pandas_and_polars_registrations_take_buffers(cases: dict[str, Case]) -> None:
    import pandas as pd

    data = cases["apx"].path.read_bytes()
    expected = bindf.read_apx(cases["apx"].path)
    pd.testing.assert_frame_equal(pd.read_apx(io.BytesIO(data)), expected)
    assert pl.read_apx(data).equals(pl.from_pandas(expected))


# -- semantics: text mode, bounded memory, pickling, identity -------------------------------
def test_text_mode_file_is_a_clear_error(cases: dict[str, Case]) -> None:
    path = cases["apx_log"].path
    with open(path) as text, pytest.raises(bindf.BindfError, match="text mode.*'rb'"):
        bindf.read(text)
    with pytest.raises(bindf.BindfError, match="text mode"):
        bindf.read(io.StringIO(path.read_text()))


def test_text_from_a_read_method_is_a_clear_error() -> None:
    class Texty:
        def read(self, n: int = -1) -> str:
            return "Namespace(name='x')\n"

    with pytest.raises(bindf.BindfError, match="text mode"):
        bindf.read(Texty())


def test_long_stream_goes_to_disk_with_bounded_memory(cases: dict[str, Case],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream longer than the in-memory limit is copied to a temporary file in fixed
    pieces, so memory does not grow with the stream."""
    monkeypatch.setattr(_file_objects, "SPOOL_MEMORY_BYTES", 4096)
    monkeypatch.setattr(_file_objects, "SPOOL_CHUNK_BYTES", 1000)
    case = cases["apx"]
    stream, thread = pipe_of(case.path.read_bytes())
    with stream:
        (source,) = expand_sources(stream)
    thread.join()
    assert isinstance(source, ObjectSource)
    assert source._file._rolled  # on disk, not in memory
    assert source.size == case.path.stat().st_size
    assert_same_read(read_arrow(source, case), read_arrow(case.path, case), "<BufferedReader>")
    source.close()
    assert source._file.closed


def test_small_stream_stays_in_memory(cases: dict[str, Case]) -> None:
    (source,) = expand_sources(ReadOnly(cases["sp01"].path.read_bytes()))
    assert not source._file._rolled


def test_buffer_sources_pickle_but_file_objects_do_not(cases: dict[str, Case]) -> None:
    data = cases["spf1"].path.read_bytes()
    (from_bytes,) = expand_sources(data)
    clone = pickle.loads(pickle.dumps(from_bytes))
    assert clone.path == "<bytes>" and clone.size == len(data)
    assert bindf.read(clone, output="arrow").equals(bindf.read(data, output="arrow"))
    (from_file,) = expand_sources(io.BytesIO(data))
    with pytest.raises(TypeError, match="pass a path or bytes"):
        pickle.dumps(from_file)


def test_object_sources_are_not_equal_by_name() -> None:
    a, b = expand_sources([b"SPF1", b"SPF1"])
    assert a != b and a == a


def test_records_memmap_needs_a_path(cases: dict[str, Case]) -> None:
    case = cases["records"]
    with pytest.raises(ValueError, match="memmap=True needs a local file path"):
        bindf.read_records(case.path.read_bytes(), case.kwargs["dtype"],
                           header=case.kwargs["header"], memmap=True)


def test_empty_stream_is_unknown_format() -> None:
    with pytest.raises(bindf.UnknownFormatError, match="<bytes>: file is empty"):
        bindf.read(b"")


def test_unknown_format_lists_what_detection_can_find() -> None:
    """The error lists the formats that detection tries, each with its description; not
    ``records``, which is only ever read when asked for (it has no magic to find)."""
    with pytest.raises(bindf.UnknownFormatError) as raised:
        bindf.read(b"\x00\x01 not any format")
    listed = str(raised.value).split("; bindf reads: ")[1]
    names = [item.split(" (")[0] for item in listed.split("), ")]
    assert "records" not in names
    assert {"apx", "apx_log", "astep", "it02", "spectro", "itt1", "fcs1", "it01"} <= set(names)


# -- the command line: standard input ----------------------------------------------------
def _bindf(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "bindf", *args], capture_output=True,
                          check=False, **kwargs)


def test_cli_converts_a_pipe_from_stdin(cases: dict[str, Case], tmp_path: Path) -> None:
    """``cat run.apx | bindf convert - -o run.parquet``."""
    case = cases["apx"]
    out = tmp_path / "run.parquet"
    with subprocess.Popen(["cat", str(case.path)], stdout=subprocess.PIPE) as cat:
        done = _bindf("convert", "-", "-o", str(out), stdin=cat.stdout)
    assert done.returncode == 0, done.stderr.decode()
    assert b"<stdin> " in done.stderr
    table = pq.read_table(out)
    expected = read_arrow(case.path, case)
    assert table.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))
    assert table.schema.metadata[b"bindf.source"] == b'"<stdin>"'  # JSON text


def test_cli_info_and_head_read_stdin(cases: dict[str, Case]) -> None:
    data = cases["sp01"].path.read_bytes()
    info = _bindf("info", "--json", "-", input=data)
    assert info.returncode == 0, info.stderr.decode()
    assert b'"format": "sp01"' in info.stdout
    head = _bindf("head", "-n", "2", "-", input=data)
    assert head.returncode == 0, head.stderr.decode()


def test_cli_stdin_rules(tmp_path: Path) -> None:
    twice = _bindf("convert", "-", "-", "-o", str(tmp_path / "x.parquet"), input=b"")
    assert twice.returncode == 2 and b"only once" in twice.stderr
    no_name = _bindf("convert", "-", "--output-dir", str(tmp_path), input=b"")
    assert no_name.returncode == 2 and b"use -o OUT" in no_name.stderr


def test_named_file_object_is_detected_by_its_extension(cases: dict[str, Case]) -> None:
    """A headerless format (test plugin ``raw16``) has only its extension to go by: an
    ``open(path, "rb")`` object has a name, and detection uses it."""
    case = cases["raw16"]
    with open(case.path, "rb") as f:
        table = bindf.read(f, output="arrow")
    assert_same_read(table, read_arrow(case.path, case), str(case.path))


def test_tilde_is_the_home_folder(cases: dict[str, Case], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``~`` starts a path in the home folder, as in pandas' and polars' readers: eager
    reads, globs, scans, headers and follow."""
    monkeypatch.setenv("HOME", str(tmp_path))
    case = cases["it02_dense"]
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.bin").write_bytes(case.path.read_bytes())
    expected = bindf.read(case.path)
    pd.testing.assert_frame_equal(bindf.read("~/runs/a.bin"), expected)
    pd.testing.assert_frame_equal(pd.read_it02("~/runs/*.bin"), expected)
    assert pl.scan_it02("~/runs/a.bin").collect().height == len(expected)
    assert bindf.read_header("~/runs/a.bin") == bindf.read_header(case.path)
    assert len(bindf.read_headers("~/runs/*.bin")) == 1
    with bindf.follow("~/runs/a.bin", idle_timeout=0, poll_interval=0.01) as frames:
        assert sum(len(f) for f in frames) == len(expected)


def test_a_file_object_at_its_end_says_so(cases: dict[str, Case]) -> None:
    """A file object read before is at its end: the error names the position and how to
    read it again, instead of calling a non-empty file empty."""
    case = cases["it02_dense"]
    with open(case.path, "rb") as f:
        first = pd.read_it02(f)
        assert len(first) > 0
        with pytest.raises(bindf.UnknownFormatError, match=r"at its end \(position 4106\)"
                           r".*seek\(0\)") as info:
            pd.read_it02(f)
        assert info.value.offset == 4106 and info.value.path == str(case.path)
        f.seek(0)
        pd.testing.assert_frame_equal(pd.read_it02(f), first)
