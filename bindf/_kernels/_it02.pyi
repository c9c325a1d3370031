"""Type stub of the compiled IT02 kernel (``_it02.pyx``).

Memory safe on any bytes and any argument values (fuzzed by ``tests/test_kernel_fuzz.py``
and ``fuzz/fuzz_kernels.py``): positions outside the buffer are clamped or refused as
each docstring says, and nothing is written past the end of an output array (a call
stops when they are full, or raises ``ValueError`` if they are too short). Arguments of
the wrong type or dtype, non-contiguous arrays and integers beyond the C types are
refused by Cython's argument conversion (``TypeError``/``ValueError``/``OverflowError``);
``None`` for an array is accepted as an empty array.
"""

import numpy as np
from numpy.typing import NDArray

STATUS_END: int
STATUS_LIMIT: int
STATUS_BAD_MASK: int
BIN_OK: int
BIN_NOT_FINITE: int
BIN_NOT_AFTER_PREVIOUS: int
BIN_OUT_OF_RANGE: int
MAX_SPARSE_CHANNELS: int
SPARSE_FIXED_BYTES: int

def scan_sparse(
    buf: NDArray[np.uint8] | bytes | bytearray | memoryview,
    pos: int,
    n_channels: int,
    max_rows: int,
) -> tuple[int, int, int]: ...
def decode_sparse(
    buf: NDArray[np.uint8] | bytes | bytearray | memoryview,
    pos: int,
    n_channels: int,
    max_rows: int,
    time_out: NDArray[np.float64],
    counts_out: list[NDArray[np.uint32]],
    slots: NDArray[np.int8],
    want_time: bool,
) -> tuple[int, int, int]: ...
def assign_bins(
    times: NDArray[np.float64],
    bin_ns: float,
    have_last: bool,
    last_t: float,
    last_bin: int,
    bins_out: NDArray[np.int64],
    status_out: NDArray[np.uint8],
) -> tuple[int, bool, float, int]: ...
