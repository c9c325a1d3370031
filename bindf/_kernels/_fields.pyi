"""Type stub of the compiled fixed-record field kernel (``_fields.pyx``).

Memory safe for any argument values: a call whose arrays are too small for ``n`` records
or whose fields lie outside the record raises ``ValueError`` before anything is written.
Arguments of the wrong type or dtype and non-contiguous arrays are refused by Cython's
argument conversion (``TypeError``/``ValueError``). ``fill_from_descriptor`` also raises
the operating system's ``OSError`` for a failed read, after the records before it;
``read_local_file`` what ``open()`` and ``read()`` raise.
"""

import numpy as np
import numpy.typing as npt

#: Whether ``stream=True`` uses streaming stores on this build (x86-64, GCC or Clang).
STREAMING_STORES: bool
#: Whether streaming stores are the readers' default on this CPU (AMD's).
STREAMING_STORES_BY_DEFAULT: bool
#: Whether :func:`fill_from_descriptor` and :func:`read_local_file` can read on this
#: platform (POSIX: ``pread``, ``open``).
HAVE_PREAD: bool

def copy_fields(
    records: npt.NDArray[np.uint8],
    n: int,
    record_size: int,
    offsets: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    columns: list[npt.NDArray[np.uint8]],
    stream: bool = False,
) -> None: ...

def fill_from_descriptor(
    fd: int,
    position: int,
    n: int,
    record_size: int,
    buffer: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    columns: list[npt.NDArray[np.uint8]],
    stream: bool = False,
) -> int: ...

def read_local_file(path: str, size: int) -> bytes: ...
