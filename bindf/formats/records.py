"""Generic fixed-layout binary files: ``bindf.read_records(path, dtype, ...)``.

For any file that is "an optional header, then records of one numpy dtype" — the
numpy ``memmap`` recipe — without writing a format module. Examples::

    # records of a 12-byte name, an int64 time and a float32 value
    bindf.read_records("log.bin", dtype=[("name", "S12"), ("time", "<i8"), ("value", "<f4")])

    # a header of rows, cols (int32) followed by a rows × cols float64 matrix
    bindf.read_records(
        "matrix.bin",
        header=[("rows", "<i4"), ("cols", "<i4")],
        dtype=lambda h: np.dtype(("<f8", (h["cols"],))),   # one record per matrix row
        count=lambda h: h["rows"],
    )

Design decisions:

* ``dtype``, ``offset`` and ``count`` may be callables taking the decoded header record
  (a dict of Python scalars), so header fields can size the data.
* Sub-array fields are flattened to one column per element (``value_0``, ``value_1`` …,
  ``subarrays="flatten"``, the default) or kept as Arrow fixed-size lists
  (``subarrays="list"``). A plain (non-structured) dtype gives one column ``value``.
* Byte-string (``S``, read as UTF-8) and unicode (``U``) fields are Arrow strings with
  numpy's value (trailing NULs removed, NULs before the last other byte kept); ``V``
  fields fixed-size binary; datetime64/timedelta64 (units s, ms, us, ns) timestamps and
  durations, NaT being null. Big-endian fields are converted to native order. The schema
  is fixed before any record is read, so a value of a text field that is not text is
  damage handled by ``on_error`` (raise with the record's offset, or null), never a
  change of the column's type. Dtypes that have no exact Arrow column (complex, object,
  overlapping fields …) are refused before any data is read; fields out of offset order
  are read as numpy reads them. ``docs/formats/records.md`` has the full rules.
* Reading uses ``readinto`` like every bindf reader (see :mod:`bindf.formats._fixed`); this is the reader of
  :class:`bindf.FixedRecordFormat` with the layout given per call.
  ``memmap=True`` gives the literal numpy-memmap behaviour (``np.memmap`` views, no read
  buffer); it is opt-in because a memory-mapped file that another process truncates
  kills the interpreter with SIGBUS — never use it on acquisitions still being written.
* A declared ``count`` larger than what the file holds is capped at what it holds (with
  a truncation warning); the file size always bounds the allocation.
"""

from __future__ import annotations

from typing import Any, BinaryIO, ClassVar

from .._file_objects import ObjectSource
from .fixed_format import FixedLayout, FixedLayoutReader


class RecordsReader(FixedLayoutReader):
    """Any file of fixed-size records described by a numpy dtype (``read_records``).

    Options: ``dtype`` (required), ``offset``, ``header``, ``count``, ``subarrays``,
    ``memmap`` — see :func:`bindf.read_records`. The same reader as a
    :class:`bindf.FixedRecordFormat`, with the layout given per call.
    """

    name: ClassVar[str] = "records"
    label: ClassVar[str] = "fixed-record"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        opts = dict(self.options)
        # Its options are the layout itself, not values for the layout's callables.
        self.option_values = {}
        if "dtype" not in opts:
            raise TypeError("read_records needs dtype=")
        self.use_memmap = bool(opts.pop("memmap", False))
        layout_options = {k: opts.pop(k) for k in ("dtype", "header", "offset", "count",
                                                     "subarrays") if k in opts}
        self.refuse_options(opts, ("dtype", "header", "offset", "count", "subarrays",
                                   "memmap"))
        if self.use_memmap and (self.source.is_remote or isinstance(self.source, ObjectSource)):
            raise ValueError(f"{self.path}: memmap=True needs a local file path")
        self.layout = FixedLayout(**layout_options)  # type: ignore[misc]
        self.subarrays = self.layout.subarrays
        return self._read_layout(f, self.layout)
