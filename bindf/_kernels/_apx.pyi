"""Type stub of the compiled AstroPix kernel (``_apx.pyx``).

Memory safe on any bytes and any argument values (fuzzed by ``tests/test_kernel_fuzz.py``
and ``fuzz/fuzz_kernels.py``): positions outside the buffer are clamped or refused as
each docstring says, and nothing is written past the end of an output array (a call
stops when they are full, or raises ``ValueError`` if they are too short). Arguments of
the wrong type or dtype, non-contiguous arrays and integers beyond the C types are
refused by Cython's argument conversion (``TypeError``/``ValueError``/``OverflowError``);
``None`` for an array is accepted as an empty array.
"""

import numpy as np
import numpy.typing as npt

FRAME_END: int
FRAME_FULL: int
FRAME_INCOMPLETE: int
FRAME_BAD_MARKER: int
#: The compiled loops of ``hit_fields`` this build has and this CPU runs, best first: a
#: subset of ``("avx512", "avx2", "baseline", "words")``, ``"baseline"`` and ``"words"``
#: (the AVX-512 loop's algorithm built for the baseline, for tests) always.
HIT_FIELDS_ISAS: tuple[str, ...]
#: ToT clock cycles per microsecond, as the hit fields compute ``tot_us``.
CLOCK_CYCLES_PER_US: float

def frame_readouts(
    buf: npt.NDArray[np.uint8],
    pos: int,
    end: int,
    header_pos: npt.NDArray[np.int64],
    readout_id: npt.NDArray[np.uint32],
    timestamp: npt.NDArray[np.uint64],
    length: npt.NDArray[np.uint32],
) -> tuple[int, int, int]: ...
def find_marker(buf: npt.NDArray[np.uint8], start: int, end: int) -> int: ...
def decode_hits(
    buf: npt.NDArray[np.uint8],
    payload_pos: npt.NDArray[np.int64],
    payload_len: npt.NDArray[np.uint32],
    readout_id: npt.NDArray[np.uint32],
    timestamp: npt.NDArray[np.uint64],
    carry: npt.NDArray[np.uint8],
    carry_len: int,
    hits: npt.NDArray[np.uint8],
    hit_order: npt.NDArray[np.uint8],
    hit_readout_id: npt.NDArray[np.uint32],
    hit_timestamp: npt.NDArray[np.uint64],
    status: npt.NDArray[np.uint8],
    n_hits: npt.NDArray[np.uint32],
    store: bool = ...,
) -> tuple[int, int]: ...
#: Bytes per hit in what ``IntactRunDecoder.decode`` returns (8 raw hit bytes, u64
#: timestamp, u32 readout id, u8 decoding order; packed, native byte order).
PACKED_HIT_SIZE: int

class IntactRunDecoder:
    """Frames and decodes whole small runs in one call, reusing its scratch (one per
    thread)."""

    def decode(self, data: bytes, start: int) -> bytes | None: ...

def hit_fields(
    hits: npt.NDArray[np.uint8],
    chip_id: npt.NDArray[np.uint8] | None = ...,
    payload: npt.NDArray[np.uint8] | None = ...,
    row: npt.NDArray[np.uint8] | None = ...,
    column: npt.NDArray[np.uint8] | None = ...,
    ts_neg1: npt.NDArray[np.uint8] | None = ...,
    ts_coarse1: npt.NDArray[np.uint16] | None = ...,
    ts_fine1: npt.NDArray[np.uint8] | None = ...,
    ts_tdc1: npt.NDArray[np.uint8] | None = ...,
    ts_neg2: npt.NDArray[np.uint8] | None = ...,
    ts_coarse2: npt.NDArray[np.uint16] | None = ...,
    ts_fine2: npt.NDArray[np.uint8] | None = ...,
    ts_tdc2: npt.NDArray[np.uint8] | None = ...,
    ts_dec1: npt.NDArray[np.uint32] | None = ...,
    ts_dec2: npt.NDArray[np.uint32] | None = ...,
    tot_us: npt.NDArray[np.float64] | None = ...,
    isa: str | None = ...,
) -> None: ...
