"""Remote and virtual paths through fsspec: ``memory://``, ``file://`` URLs, chained URLs,
and ``storage_options`` reaching the filesystem in every reader, scan and dask function."""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import dask
import fsspec
import pandas as pd
import polars as pl
import pyarrow.compute as pc
import pytest
from conftest import write_stt1
from fsspec.implementations.memory import MemoryFileSystem

import bindf
import bindf.dask as bdask
from bindf._inputs import expand_sources
from bindf._source import Source


class _OwnMemory(MemoryFileSystem):
    """A memory filesystem with its own protocol and store."""

    @classmethod
    def _strip_protocol(cls, path):
        if path.startswith(f"{cls.protocol}://"):  # memory's own only knows "memory://"
            path = "memory://" + path[len(cls.protocol) + 3 :]
        return super()._strip_protocol(path)


class TokenFileSystem(_OwnMemory):
    """An in-memory filesystem that refuses to work without ``token="secret"``: proves
    that ``storage_options`` reach fsspec."""

    protocol = "bindftoken"
    store: dict = {}
    pseudo_dirs = [""]

    def __init__(self, token: str | None = None, **kwargs):
        if token != "secret":
            raise PermissionError("bindftoken:// needs storage_options={'token': 'secret'}")
        super().__init__(**kwargs)


class NoSizeFileSystem(_OwnMemory):
    """Like an HTTP server that sends no Content-Length."""

    protocol = "bindfnosize"
    store: dict = {}
    pseudo_dirs = [""]

    def size(self, path):
        return None


fsspec.register_implementation("bindftoken", TokenFileSystem, clobber=True)
fsspec.register_implementation("bindfnosize", NoSizeFileSystem, clobber=True)
OPTIONS = {"token": "secret"}


@pytest.fixture
def memdir(tmp_path: Path):
    """A fresh ``memory://`` folder with three STT1 files (1000, 500 and 250 photons),
    and the local copies they were made from."""
    name = f"bindf-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    local = []
    for i, n in enumerate((1000, 500, 250)):
        path = write_stt1(tmp_path / f"run{i}.bin", n=n, seed=i)
        fs.pipe(f"/{name}/run{i}.bin", path.read_bytes())
        local.append(path)
    fs.pipe(f"/{name}/notes.txt", b"not a run")
    yield f"memory://{name}", local
    fs.rm(f"/{name}", recursive=True)


def test_memory_url_eager_read_equals_local(memdir) -> None:
    url, local = memdir
    df = bindf.read(f"{url}/run0.bin")
    pd.testing.assert_frame_equal(df, bindf.read(local[0]))
    assert df.attrs["bindf"]["source"] == f"{url}/run0.bin"
    assert bindf.read_header(f"{url}/run1.bin") == bindf.read_header(local[1])
    batches = list(bindf.iter_batches(f"{url}/run0.bin", batch_size=300))
    assert [b.num_rows for b in batches] == [300, 300, 300, 100]


def test_memory_reads_at_once_each_keep_their_position(memdir, tmp_path: Path) -> None:
    """fsspec's memory filesystem hands every open of a path the same file object:
    reads in threads, a list naming the file twice and two queries of one scan in
    collect_all moved each other's position (wrong rows, none, or false damage). Each
    read now has a position of its own."""
    from concurrent.futures import ThreadPoolExecutor

    url, _ = memdir
    fs = fsspec.filesystem("memory")
    big = write_stt1(tmp_path / "big.bin", n=600_000, seed=7)
    fs.pipe(f"{url[len('memory://'):]}/big.bin", big.read_bytes())
    apx = Path(__file__).parent / "data" / "20250723_092534_data.apx"
    fs.pipe(f"{url[len('memory://'):]}/run.apx", apx.read_bytes())
    expected = bindf.read(big, output="arrow").replace_schema_metadata(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ThreadPoolExecutor(4) as pool:
            tables = list(pool.map(lambda _: bindf.read(f"{url}/big.bin", output="arrow",
                                                        threads=1), range(6)))
        assert all(t.replace_schema_metadata(None).equals(expected) for t in tables)
        lazy = pl.scan_spectro(f"{url}/big.bin")
        counts = pl.collect_all([lazy.select(pl.len()), lazy.select(pl.col("event").sum())])
        assert [c.item() for c in counts] == [len(expected), pc.sum(expected["event"]).as_py()]
        twice = pl.read_apx([f"{url}/run.apx"] * 2)
        assert twice.height == 2 * bindf.read_apx(apx).shape[0]


def test_memory_glob(memdir) -> None:
    url, local = memdir
    sources = expand_sources(f"{url}/run*.bin")
    name = url.removeprefix("memory://")
    # Spelled as the pattern was (as the explicit paths are named; fsspec's own spelling
    # is memory:///…); notes.txt does not match.
    assert [s.path for s in sources] == [f"memory://{name}/run{i}.bin" for i in range(3)]
    assert [s.path for s in expand_sources(f"memory:///{name}/run*.bin")] == [
        f"memory:///{name}/run{i}.bin" for i in range(3)]
    assert [s.size for s in sources] == [p.stat().st_size for p in local]
    df = bindf.read(f"{url}/run*.bin", include_file_paths="file")
    expected = bindf.read(local, include_file_paths="file")
    assert df["file"].unique().tolist() == [s.path for s in sources]
    assert bindf.read(sources[0].path, include_file_paths="file")["file"][0] == sources[0].path
    pd.testing.assert_frame_equal(df.drop(columns="file"), expected.drop(columns="file"))
    # Re-reading a glob's match by its name gives the same rows.
    pd.testing.assert_frame_equal(bindf.read(sources[1].path), bindf.read(local[1]))
    with pytest.raises(FileNotFoundError, match="no files match"):
        bindf.read(f"{url}/nothing*.bin")
    with pytest.raises(FileNotFoundError):
        bindf.read(f"{url}/missing.bin")


def test_memory_names_with_glob_characters(memdir) -> None:
    url, local = memdir
    fs = fsspec.filesystem("memory")
    literal = f"{url}/odd[1].bin"
    fs.pipe(literal.removeprefix("memory://"), local[2].read_bytes())
    assert [s.path for s in expand_sources(literal)] == [literal]
    pd.testing.assert_frame_equal(bindf.read(literal), bindf.read(local[2]))


def test_memory_scan(memdir) -> None:
    url, local = memdir
    lazy = pl.scan_spectro(f"{url}/run*.bin")
    eager = bindf.read(local, output="polars")
    assert lazy.collect().equals(eager)
    query = lazy.filter(pl.col("channel") == 2).select("macrotime_ns").head(17)
    expected = eager.filter(pl.col("channel") == 2).select("macrotime_ns").head(17)
    assert query.collect().equals(expected)
    assert lazy.bindf.header == bindf.read_header(local[0])


def test_memory_dask(memdir) -> None:
    url, local = memdir
    with dask.config.set(scheduler="synchronous"):  # memory:// lives in this process
        ddf = bdask.read(f"{url}/run*.bin", blocksize=128 * 17, columns=["event", "channel"])
        assert ddf.npartitions == 8 + 4 + 2
        result = ddf.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(result, bindf.read(local, columns=["event", "channel"]))


def test_chained_url_with_cache(memdir, tmp_path: Path) -> None:
    url, local = memdir
    chained = f"simplecache::{url}/run*.bin"
    options = {"simplecache": {"cache_storage": str(tmp_path / "cache")}}
    sources = expand_sources(chained, options)
    assert all(s.path.startswith("simplecache::memory://") for s in sources)
    df = bindf.read(chained, storage_options=options)
    pd.testing.assert_frame_equal(df, bindf.read(local))
    assert any((tmp_path / "cache").iterdir())  # really went through the cache


def test_storage_options_reach_fsspec_everywhere(memdir) -> None:
    _, local = memdir
    fs = TokenFileSystem(token="secret")
    for i, path in enumerate(local):
        fs.pipe(f"/t/run{i}.bin", path.read_bytes())
    one, pattern = "bindftoken://t/run0.bin", "bindftoken://t/run*.bin"
    expected = bindf.read(local)

    with pytest.raises(PermissionError):
        bindf.read(one)
    pd.testing.assert_frame_equal(bindf.read(one, storage_options=OPTIONS), bindf.read(local[0]))
    pd.testing.assert_frame_equal(bindf.read(pattern, storage_options=OPTIONS), expected)
    pd.testing.assert_frame_equal(
        bindf.read_spectro(pattern, storage_options=OPTIONS, output="pandas"), expected)
    assert sum(b.num_rows for b in bindf.iter_batches(pattern, storage_options=OPTIONS)) == 1750
    assert bindf.read_header(one, storage_options=OPTIONS) == bindf.read_header(local[0])
    assert bindf.scan(pattern, storage_options=OPTIONS).collect().equals(
        bindf.read(local, output="polars"))
    assert pl.scan_spectro(pattern, storage_options=OPTIONS).select(pl.len()).collect().item() \
        == 1750
    headers = bindf.read_headers(pattern, storage_options=OPTIONS)
    assert headers["rows"].tolist() == [1000, 500, 250]
    with dask.config.set(scheduler="synchronous"):
        ddf = bdask.read_spectro(pattern, storage_options=OPTIONS, blocksize="4 kB")
        pd.testing.assert_frame_equal(ddf.compute().reset_index(drop=True), expected)
    with pytest.raises(PermissionError):
        bdask.read(pattern)
    fs.rm("/t", recursive=True)


def test_remote_truncated_file_warns_with_its_url(memdir) -> None:
    url, local = memdir
    fs = fsspec.filesystem("memory")
    cut = f"{url}/cut.bin"
    data = local[0].read_bytes()
    fs.pipe(cut.removeprefix("memory://"), data[:-5])
    with pytest.warns(bindf.TruncatedFileWarning) as caught:
        df = bindf.read(cut)
    assert len(df) == 999 and caught[0].message.path == cut


def test_unknown_remote_size_is_a_clear_error() -> None:
    fsspec.filesystem("bindfnosize").pipe("/x/a.bin", b"\0" * 34)
    with pytest.raises(OSError, match="size of this remote file is unknown"):
        bindf.read("bindfnosize://x/a.bin", format="spectro")


def test_file_urls(tmp_path: Path) -> None:
    paths = [write_stt1(tmp_path / f"r{i}.bin", n=100 * (i + 1), seed=i) for i in range(3)]
    expected = bindf.read(paths)
    one = f"file://{paths[0]}"
    assert not Source(one).is_remote  # read as a local file, no fsspec involved
    pd.testing.assert_frame_equal(bindf.read(one), bindf.read(paths[0]))
    pattern = f"file://{tmp_path}/r*.bin"
    df = bindf.read(pattern, include_file_paths="file")
    assert df["file"].unique().tolist() == [f"file://{p}" for p in paths]
    pd.testing.assert_frame_equal(df.drop(columns="file"), expected)
    assert bindf.scan(pattern).collect().equals(bindf.read(paths, output="polars"))
    assert bindf.read_headers(pattern)["path"].tolist() == [f"file://{p}" for p in paths]
    assert bindf.read_header(one) == bindf.read_header(paths[0])
    with dask.config.set(scheduler="synchronous"):
        ddf = bdask.read(pattern, blocksize=50 * 17, include_file_paths="file")
        assert ddf.npartitions == 2 + 4 + 6
        pd.testing.assert_frame_equal(ddf.compute().reset_index(drop=True), df)
    # file://localhost/… is the same file.
    pd.testing.assert_frame_equal(bindf.read(f"file://localhost{paths[1]}"),
                                  bindf.read(paths[1]))
    # follow too: it polled the URL text with os.stat and said the file "did not appear"
    followed = pd.concat(bindf.follow(pattern, idle_timeout=0, include_file_paths="file"))
    assert followed["file"].unique().tolist() == [str(p) for p in paths]
    pd.testing.assert_frame_equal(followed.drop(columns="file").reset_index(drop=True),
                                  expected)


def test_missing_remote_file_is_named_with_its_protocol(memdir) -> None:
    url, _ = memdir
    with pytest.raises(FileNotFoundError) as raised:
        bindf.read(f"{url}/nope.bin", format="spectro")
    assert raised.value.filename == f"{url}/nope.bin"
    assert f"'{url}/nope.bin'" in str(raised.value)
