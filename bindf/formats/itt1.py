"""FLIM LABS intensity time tagger, ``ITT1`` (``read_itt1``, ``write_itt1``).

Layout (the format page in docs/, from the FLIM LABS reading script
``time_tagger_script.py``, which unpacks the records with ``struct '<Bd'``)::

    "ITT1" | u32 H | H bytes of JSON header | records …
    record (9 bytes, packed) = u8 event | f64 time_ns

The event byte is a 0-based channel index for a photon, or a marker: 70 ``F`` frame,
76 ``L`` line, 80 ``P`` pixel — the codes of the spectroscopy photon events, so the
``channel``/``marker`` columns are made by the same code as ``read_spectro``'s
(:func:`bindf.formats.spectro.event_columns`).

Decisions where the vendor's script is silent or fails: every header key is optional
(the script needs ``channels`` and ``laser_period_ns`` and crashes without them); zero
records give an empty frame (the script crashes); records come back in file order (the
script sorts them by time with a non-stable sort); a partial last record is a truncation
warning (the script stops silently). No end marker exists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from .._writing import (
    encode_preamble,
    inherited_header,
    require_columns,
    to_arrow_table,
    write_fixed_record_file,
)
from .fixed_format import FixedRecordFormat
from .spectro import PhotonEventColumns, event_columns

ITT1_MAGIC = b"ITT1"

#: One event, 9 bytes, no padding.
RECORD_DTYPE = np.dtype([("event", "u1"), ("time_ns", "<f8")])


def _channel_and_marker(table: pa.Table, header: Mapping[str, Any]) -> pa.Table:
    """Append ``channel`` and ``marker`` (derived from ``event``) to the raw fields."""
    derived = event_columns(table.column("event").to_numpy())
    table = table.append_column(pa.field("channel", pa.uint8()), derived["channel"])
    return table.append_column(pa.field("marker", derived["marker"].type), derived["marker"])


def sample() -> bytes:
    """A small valid file for the robustness and fuzz sweeps: photons on channels 0
    and 2 with a line marker every eighth event."""
    n = 48
    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["event"] = np.where(np.arange(n) % 8 == 7, 76, (np.arange(n) % 2) * 2)
    records["time_ns"] = np.arange(n) * 125.5
    return encode_preamble(ITT1_MAGIC, {"channels": [0, 2], "laser_period_ns": 12.5}) \
        + records.tobytes()


#: The whole reader: a declared fixed-record format (see :class:`bindf.FixedRecordFormat`).
SPEC = FixedRecordFormat(
    "itt1", magic=ITT1_MAGIC, header="json", dtype=RECORD_DTYPE,
    transform=_channel_and_marker, writer=False,
    description="FLIM LABS ITT1 intensity time tagger",
)


class ITT1Reader(PhotonEventColumns, SPEC.reader_class()):  # type: ignore[misc]
    """FLIM LABS intensity time tagger (``ITT1``): one row per photon or marker, in
    file order. (The declared transform gives the columns; the reads compute only the
    columns asked for, as ``read_spectro`` does.)

    Columns
    -------
    event : uint8
        The raw event byte.
    time_ns : float64
        Time of the event, ns.
    channel : uint8, null on marker rows
        The 0-based channel of a photon (the vendor script labels it ``ch{k+1}``). Every
        event byte that is not a marker code counts as a channel, as stored.
    marker : dictionary ("frame", "line", "pixel"), null on photon rows
        The marker kind for events 70/76/80.

    The header (``channels``, ``laser_period_ns`` and whatever else the file holds) is
    kept as it is; no key is required. A file that ends inside a record gives a
    :class:`~bindf.errors.TruncatedFileWarning` and all complete records.
    """


def write_itt1(
    path: str | os.PathLike[str],
    frame: Any,
    header: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write time-tagger events as an ``ITT1`` file, atomically.

    Parameters
    ----------
    frame:
        pandas/polars/Arrow frame (or dict of columns) with ``event`` (fits uint8) and
        ``time_ns``. The derived ``channel`` and ``marker`` of a frame bindf read are
        ignored: ``event`` is what is stored.
    header:
        The JSON header (``channels``, ``laser_period_ns`` …). When omitted, the header a
        bindf reader attached to ``frame`` is reused, else ``{}``.
    overwrite:
        ``False`` refuses to replace an existing file.
    """
    table = to_arrow_table(frame)
    require_columns(table, RECORD_DTYPE.names, "ITT1 events")
    preamble = encode_preamble(ITT1_MAGIC, inherited_header(frame, header) or {})
    write_fixed_record_file(path, preamble, table, RECORD_DTYPE, overwrite=overwrite)
