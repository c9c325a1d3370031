"""Placeholder: being written (see the issue tracker)."""

from typing import ClassVar

from ._base import FormatReader


class ApxReader(FormatReader):
    """Not implemented yet."""

    name: ClassVar[str] = "apx"
    label: ClassVar[str] = "apx"

    def _read_header(self, f):
        raise NotImplementedError("apx reader not written yet")

    @property
    def schema(self):
        raise NotImplementedError

    def _batches(self, columns, batch_size, n_rows):
        raise NotImplementedError
