"""Type stub of the compiled A-STEP frame-stream kernel (``_astep.pyx``).

Memory safe on any bytes and any argument values: ``end`` is clamped to the buffer,
nothing is written past the end of an output array (the call stops with ``PARSE_FULL``
when one is full), and a ``state`` array that is too short or a ``ts_bytes`` outside
{0, 2, 4, 6, 8} raises ``ValueError``, as does a ``v3_fields`` output shorter than
``sensor``, a ``length`` shorter than it or ``sensor_views``' ``views`` shorter than 16
bytes per sensor word. Arguments of the wrong type or dtype and
non-contiguous arrays are refused by Cython's argument conversion.
"""

import numpy as np
import numpy.typing as npt

PARSE_END: int
PARSE_FULL: int
PARSE_INCOMPLETE: int

STATE_GAP_OPEN_AT: int
STATE_FILLER_BYTES: int
STATE_RESYNC_BYTES: int
STATE_RESYNCS: int
STATE_SIZE: int

def new_state() -> npt.NDArray[np.int64]: ...
def parse_frames(
    buf: npt.NDArray[np.uint8],
    pos: int,
    end: int,
    base_offset: int,
    ts_bytes: int,
    state: npt.NDArray[np.int64],
    frame_offset: npt.NDArray[np.int64],
    length: npt.NDArray[np.uint8],
    layer: npt.NDArray[np.uint8],
    sensor: npt.NDArray[np.uint64],
    timestamp: npt.NDArray[np.uint64],
    gap_start: npt.NDArray[np.int64],
    gap_length: npt.NDArray[np.int64],
) -> tuple[int, int, int, int]: ...
def sensor_views(sensor: npt.NDArray[np.uint64], views: npt.NDArray[np.uint8]) -> None: ...
def v3_fields(
    sensor: npt.NDArray[np.uint64],
    length: npt.NDArray[np.uint8],
    tick_ns: float,
    chip_id: npt.NDArray[np.uint8] | None = None,
    payload: npt.NDArray[np.uint8] | None = None,
    ts_bytes: npt.NDArray[np.uint8] | None = None,
    column: npt.NDArray[np.uint8] | None = None,
    location: npt.NDArray[np.uint8] | None = None,
    chip_timestamp: npt.NDArray[np.uint8] | None = None,
    tot_msb: npt.NDArray[np.uint8] | None = None,
    tot_lsb: npt.NDArray[np.uint8] | None = None,
    tot_total: npt.NDArray[np.uint16] | None = None,
    tot_us: npt.NDArray[np.float64] | None = None,
    kind_code: npt.NDArray[np.int8] | None = None,
    valid: npt.NDArray[np.uint8] | None = None,
) -> int: ...
