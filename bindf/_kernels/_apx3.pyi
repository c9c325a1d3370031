"""Type stub of the compiled AstroPix 3 hit kernel (``_apx3.pyx``).

Memory safe on any bytes and any argument values: payload positions outside the buffer
and output arrays that are too short raise ``ValueError`` before anything is read or
written out of range. Arguments of the wrong type or dtype, non-contiguous arrays and
integers beyond the C types are refused by Cython's argument conversion
(``TypeError``/``ValueError``/``OverflowError``); ``None`` for an array is accepted as an
empty array. Readouts are framed by ``_apx.frame_readouts`` (same container).
"""

import numpy as np
import numpy.typing as npt

#: ToT clock cycles per microsecond (200 MHz), as ``tot_us`` is computed.
CLOCK_CYCLES_PER_US: float

def decode_hits(
    buf: npt.NDArray[np.uint8],
    payload_pos: npt.NDArray[np.int64],
    payload_len: npt.NDArray[np.uint32],
    readout_id: npt.NDArray[np.uint32],
    timestamp: npt.NDArray[np.uint64],
    carry: npt.NDArray[np.uint8],
    carry_len: int,
    stitch: bool,
    hits: npt.NDArray[np.uint8],
    hit_order: npt.NDArray[np.uint16],
    hit_readout_id: npt.NDArray[np.uint32],
    hit_timestamp: npt.NDArray[np.uint64],
    status: npt.NDArray[np.uint8],
    n_hits: npt.NDArray[np.uint32],
    store: bool = ...,
) -> tuple[int, int]: ...
def hit_fields(
    hits: npt.NDArray[np.uint8],
    chip_id: npt.NDArray[np.uint8] | None = ...,
    payload: npt.NDArray[np.uint8] | None = ...,
    column: npt.NDArray[np.uint8] | None = ...,
    location: npt.NDArray[np.uint8] | None = ...,
    chip_timestamp: npt.NDArray[np.uint8] | None = ...,
    tot_msb: npt.NDArray[np.uint8] | None = ...,
    tot_lsb: npt.NDArray[np.uint8] | None = ...,
    tot_dec: npt.NDArray[np.uint16] | None = ...,
    tot_us: npt.NDArray[np.float64] | None = ...,
) -> None: ...
