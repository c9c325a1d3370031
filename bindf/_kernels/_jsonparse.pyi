"""Type stub of the compiled JSON header parser (``_jsonparse.pyx``).

Memory safe on any bytes: every read stays within ``raw``. ``None`` for ``raw`` is
treated as empty.
"""

from typing import Any

import numpy as np
from numpy.typing import NDArray

_Bytes = NDArray[np.uint8] | bytes | bytearray | memoryview

def parse_object(raw: _Bytes | None, max_depth: int) -> dict[str, Any] | None: ...
def nesting_depth(raw: _Bytes | None) -> int: ...
