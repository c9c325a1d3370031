"""Type stub of the compiled fixed-record field kernel (``_fields.pyx``).

Memory safe for any argument values: a call whose arrays are too small for ``n`` records
or whose fields lie outside the record raises ``ValueError`` before anything is written.
Arguments of the wrong type or dtype and non-contiguous arrays are refused by Cython's
argument conversion (``TypeError``/``ValueError``).
"""

import numpy as np
import numpy.typing as npt

#: Whether ``stream=True`` uses streaming stores on this build (x86-64, GCC or Clang).
STREAMING_STORES: bool

def copy_fields(
    records: npt.NDArray[np.uint8],
    n: int,
    record_size: int,
    offsets: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    columns: list[npt.NDArray[np.uint8]],
    stream: bool = False,
) -> None: ...
