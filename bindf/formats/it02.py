"""Placeholder: being written (see the issue tracker)."""

from typing import ClassVar

from ._base import FormatReader


class IT02Reader(FormatReader):
    """Not implemented yet."""

    name: ClassVar[str] = "it02"
    label: ClassVar[str] = "it02"

    def _read_header(self, f):
        raise NotImplementedError("it02 reader not written yet")

    @property
    def schema(self):
        raise NotImplementedError

    def _batches(self, columns, batch_size, n_rows):
        raise NotImplementedError
