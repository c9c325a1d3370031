"""Shared reading loop of formats made of fixed-size records after a header.

Spectroscopy events, SP01 decay curves and SPF1 phasors all store ``header | records``
with one packed record layout per file. Such files need no kernel: the number of
complete records is known from the file size alone, chunks are read with ``readinto``
straight into a packed numpy structured array, and a partial record at the end is a
truncation (warning, complete records kept).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from .._source import iter_fixed_records
from ..errors import TruncatedFileWarning
from ._base import FormatReader


class FixedRecordReader(FormatReader):
    """A :class:`FormatReader` whose data is ``n`` records of one packed dtype.

    Subclasses call :meth:`_set_layout` at the end of ``_read_header`` and then use
    :meth:`_iter_records` in ``_batches``.
    """

    record_dtype: np.dtype
    data_offset: int
    n_records: int
    tail_bytes: int

    def _set_layout(self, record_dtype: np.dtype, data_offset: int) -> None:
        self.record_dtype = record_dtype
        self.data_offset = data_offset
        data_bytes = max(self.source.size - data_offset, 0)
        self.n_records, self.tail_bytes = divmod(data_bytes, record_dtype.itemsize)

    def _iter_records(self, count: int, records_per_chunk: int) -> Iterator[np.ndarray]:
        """Yield chunks of the first ``min(count, n_records)`` records, warning on truncation.

        A file that ends inside a record (or shrank since it was opened) yields every
        complete record before the cut and then a :class:`TruncatedFileWarning` naming the
        byte offset of the cut record.
        """
        count = min(count, self.n_records)
        size = self.record_dtype.itemsize
        got = 0
        with self.source.open() as f:
            for records, _ in iter_fixed_records(
                f, dtype=self.record_dtype, start=self.data_offset, count=count,
                records_per_chunk=max(1, records_per_chunk),
            ):
                got += len(records)
                yield records
        if got < count:
            self._warn_truncated(self.data_offset + got * size, "the file shrank while it was read")
        elif self.tail_bytes and count == self.n_records:
            self._warn_truncated(
                self.data_offset + self.n_records * size,
                f"the last {self.tail_bytes} bytes are an incomplete {size}-byte record",
            )

    def _warn_truncated(self, offset: int, why: str) -> None:
        warnings.warn(
            TruncatedFileWarning(
                f"truncated {self.label} file: {why}; returning the complete records before it",
                path=self.path, offset=offset,
            ),
            stacklevel=3,
        )
