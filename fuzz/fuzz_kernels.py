"""atheris target: the Cython kernels called directly, every argument from the input.

Under ``run_all.sh`` the kernels are built with AddressSanitizer and every array is a
fresh numpy allocation of exactly its size (numpy allocates array data with ``malloc``,
which ASan intercepts), so one byte read or written outside an array is reported. The only exception allowed is ``ValueError``
(arguments the kernel refuses); results must satisfy the same invariants as in
``tests/test_kernel_fuzz.py`` (counts within capacity, positions within the buffer).
"""

import sys

import atheris

with atheris.instrument_imports(include=["bindf"]):
    import numpy as np

    from bindf._kernels import _apx, _it02

EXTREMES = (-(2**63), -(2**31), -1, 2**31, 2**63 - 1)


def _array(values: bytes, dtype: str) -> np.ndarray:
    """A fresh, exactly sized array (never a view of the input's bytes object)."""
    item = np.dtype(dtype).itemsize
    out = np.empty(len(values) // item, dtype=dtype)
    out.view(np.uint8)[:] = np.frombuffer(values[: out.nbytes], np.uint8)
    return out


def _position(fdp: atheris.FuzzedDataProvider, size: int) -> int:
    choice = fdp.ConsumeIntInRange(0, 9)
    if choice < 7:
        return fdp.ConsumeIntInRange(0, size)
    if choice < 9:
        return fdp.ConsumeIntInRange(-3, size + 3)
    return EXTREMES[fdp.ConsumeIntInRange(0, len(EXTREMES) - 1)]


def _buffer(fdp: atheris.FuzzedDataProvider) -> np.ndarray:
    return _array(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)), "u1")


@atheris.instrument_func
def frame_readouts(fdp: atheris.FuzzedDataProvider) -> None:
    buf = _buffer(fdp)
    pos, end = _position(fdp, len(buf)), _position(fdp, len(buf))
    caps = [fdp.ConsumeIntInRange(0, 8) for _ in range(4)]
    outs = [np.empty(c, t) for c, t in zip(caps, ("i8", "u4", "u8", "u4"))]
    n, stop, code = _apx.frame_readouts(buf, pos, end, *outs)
    assert 0 <= n <= min(caps) and code in (0, 1, 2, 3)
    assert max(pos, 0) <= stop or n == 0


@atheris.instrument_func
def find_marker(fdp: atheris.FuzzedDataProvider) -> None:
    buf = _buffer(fdp)
    start, end = _position(fdp, len(buf)), _position(fdp, len(buf))
    found = _apx.find_marker(buf, start, end)
    s, e = max(start, 0), min(max(end, 0), len(buf))
    assert found == (buf[:e].tobytes().find(b"\xfe\xdc\xba", s) if s <= e else -1)


@atheris.instrument_func
def decode_hits(fdp: atheris.FuzzedDataProvider) -> None:
    buf = _buffer(fdp)
    n = fdp.ConsumeIntInRange(0, 6)
    pos = np.array([_position(fdp, len(buf)) for _ in range(n)], dtype=np.int64)
    lens = np.array([fdp.ConsumeIntInRange(0, len(buf) + 2) if fdp.ConsumeBool()
                     else fdp.ConsumeIntInRange(0, 2**32 - 1) for _ in range(n)], np.uint32)
    short = [fdp.ConsumeIntInRange(0, 1) if fdp.ConsumeIntInRange(0, 15) == 0 else 0
             for _ in range(5)]
    carry = _array(fdp.ConsumeBytes(8 if fdp.ConsumeIntInRange(0, 15) else 7), "u1")
    carry_len = fdp.ConsumeIntInRange(-2, 9)
    cap = fdp.ConsumeIntInRange(0, 80)
    width = 8 if fdp.ConsumeIntInRange(0, 15) else 7
    store = fdp.ConsumeBool()
    args = (buf, pos, lens[: max(n - short[0], 0)],
            np.zeros(max(n - short[1], 0), np.uint32), np.zeros(max(n - short[2], 0), np.uint64),
            carry, carry_len, np.empty((cap, width), np.uint8), np.empty(cap, np.uint8),
            np.empty(cap, np.uint32), np.empty(cap, np.uint64),
            np.empty(max(n - short[3], 0), np.uint8), np.empty(max(n - short[4], 0), np.uint32),
            store)
    try:
        total, carried = _apx.decode_hits(*args)
    except ValueError:
        return
    assert -1 <= carried <= 8 and (not store or total <= cap)


def _channels(fdp: atheris.FuzzedDataProvider) -> int:
    return fdp.ConsumeIntInRange(0, 8) if fdp.ConsumeIntInRange(0, 15) else \
        fdp.ConsumeIntInRange(-(2**31), 2**31 - 1)


@atheris.instrument_func
def scan_sparse(fdp: atheris.FuzzedDataProvider) -> None:
    buf = _buffer(fdp)
    n_channels = _channels(fdp)
    pos = _position(fdp, len(buf))
    max_rows = fdp.ConsumeIntInRange(-1, 64)
    try:
        rows, stop, status = _it02.scan_sparse(buf, pos, n_channels, max_rows)
    except ValueError:
        return
    assert 0 <= rows <= max_rows and pos <= stop <= len(buf) and status in (0, 1, 2)


@atheris.instrument_func
def decode_sparse(fdp: atheris.FuzzedDataProvider) -> None:
    buf = _buffer(fdp)
    n_channels = _channels(fdp)
    pos = _position(fdp, len(buf))
    max_rows = fdp.ConsumeIntInRange(-1, 64)
    room = max(max_rows + fdp.ConsumeIntInRange(-1, 1), 0)
    n_out = fdp.ConsumeIntInRange(0, 9)
    counts = [np.empty(room if fdp.ConsumeIntInRange(0, 15) else room - 1 if room else 0,
                       np.uint32) for _ in range(n_out)]
    slots = _array(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 10)), "i1")
    time_out = np.empty(room, np.float64)
    want_time = fdp.ConsumeBool()
    try:
        result = _it02.decode_sparse(buf, pos, n_channels, max_rows, time_out, counts, slots,
                                     want_time)
    except ValueError:
        return
    assert result == _it02.scan_sparse(buf, pos, n_channels, max_rows)


@atheris.instrument_func
def assign_bins(fdp: atheris.FuzzedDataProvider) -> None:
    times = _array(fdp.ConsumeBytes(8 * fdp.ConsumeIntInRange(0, 40)), "f8")
    bin_ns = fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    n = len(times)
    bins = np.empty(n if fdp.ConsumeIntInRange(0, 15) else max(n - 1, 0), np.int64)
    status = np.empty(n, np.uint8)
    try:
        n_bad, *_ = _it02.assign_bins(times, bin_ns, fdp.ConsumeBool(), fdp.ConsumeFloat(),
                                      fdp.ConsumeIntInRange(-(2**63), 2**63 - 1), bins, status)
    except ValueError:
        return
    assert 0 <= n_bad <= n


_INTACT_RUNS = _apx.IntactRunDecoder()  # reused, as a reader's thread reuses its own


@atheris.instrument_func
def intact_run(fdp: atheris.FuzzedDataProvider) -> None:
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    start = _position(fdp, len(data))
    packed = _INTACT_RUNS.decode(data, start)
    if packed is not None:
        assert 0 <= start <= len(data)
        assert len(packed) % _apx.PACKED_HIT_SIZE == 0
        assert len(packed) // _apx.PACKED_HIT_SIZE <= (len(data) - start) // 8 + 1


KERNELS = [frame_readouts, find_marker, decode_hits, intact_run, scan_sparse, decode_sparse,
           assign_bins]


@atheris.instrument_func
def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    KERNELS[fdp.ConsumeIntInRange(0, len(KERNELS) - 1)](fdp)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
