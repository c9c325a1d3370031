"""The analysis methods of ``df.bindf`` (mixed into :class:`BindfAccessor`).

Each method only routes: it looks up the implementation for the frame's format
(:func:`bindf.analysis.helper`, a clear TypeError for the wrong format) and hands it the
frame and its bindf info. Tables come back in the frame's library; plots return the
matplotlib Axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import helper


class AnalysisMethods:
    """Analysis helpers of ``df.bindf``; which ones apply depends on ``df.bindf.format``."""

    _frame: Any
    info: Any
    format: Any

    def _call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        return helper(self.format, name)(self._frame, self.info, *args, **kwargs)

    # --- AstroPix ("apx") ----------------------------------------------------------

    def hit_map(self, *, per_chip: bool = False,
                shape: tuple[int, int] | None = None) -> Any:
        """AstroPix: hits per pixel, one row per pixel of the grid (zeros included).

        Columns ``[chip_id,] row, column, hits``. The grid is the chip's pixel matrix
        (13 × 16 for AstroPix 4, 35 × 35 for AstroPix 3; 32 × 32 when the header names
        no known chip), grown to cover every hit; ``shape=(rows, columns)`` sets it.
        AstroPix 3 hits are half-hits: call :meth:`match_rows_columns` first.
        """
        return self._call("hit_map", per_chip=per_chip, shape=shape)

    def tot_histogram(self, by: str = "chip", bins: int | Sequence[float] | str = 100,
                      range: tuple[float, float] | None = None, *,
                      tot: str | None = None) -> Any:
        """AstroPix: histogram of ``tot_us`` per chip (``by="chip"``) or per pixel
        (``by="pixel"``), shared edges; ``bins``/``range`` as in ``numpy.histogram``.

        Columns ``chip_id[, row, column], tot_us_low, tot_us_high, count``. Per pixel,
        AstroPix 3 hits (half-hits) need :meth:`match_rows_columns` first, whose pixel
        table has two ToTs: ``tot="tot_us_row"`` or ``"tot_us_column"`` picks one.
        """
        return self._call("tot_histogram", by=by, bins=bins, range=range, tot=tot)

    def hits_per_readout(self) -> Any:
        """AstroPix: hits in each readout, in time order.

        Columns ``readout_id, timestamp, hits`` (readouts without hits are not in a hit
        table, so not here either); file by file, after the file column, for frames read
        with ``include_file_paths=``.
        """
        return self._call("hits_per_readout")

    def plot_hit_map(self, *, chip: int | None = None,
                     shape: tuple[int, int] | None = None, ax: Any = None,
                     **imshow_kwargs: Any) -> Any:
        """AstroPix: image of the hit map (one chip, or all chips summed)."""
        return self._call("plot_hit_map", chip=chip, shape=shape, ax=ax, **imshow_kwargs)

    def plot_tot(self, bins: int | Sequence[float] | str = 100,
                 range: tuple[float, float] | None = None, *, ax: Any = None,
                 tot: str | None = None) -> Any:
        """AstroPix: ToT histogram, one step line per chip (``tot``: as for
        :meth:`tot_histogram`)."""
        return self._call("plot_tot", bins=bins, range=range, ax=ax, tot=tot)

    def plot_hits_per_readout(self, *, ax: Any = None) -> Any:
        """AstroPix: hits per readout against time since the first readout."""
        return self._call("plot_hits_per_readout", ax=ax)

    def match_rows_columns(self, *, same_chip_timestamp: bool = True,
                           max_tot_difference_us: float | None = None,
                           keep_unmatched: bool = False) -> Any:
        """AstroPix 3: pair each row half-hit with a column half-hit of the same readout
        and chip (and chip timestamp), greedily by closest ToT: one row per pixel hit.

        Columns ``readout_id, [wall_timestamp,] chip_id, row, column, tot_us_row,
        tot_us_column, [chip_timestamp, decoding_order_row, decoding_order_column]``.
        The result keeps the frame's bindf metadata, so ``.bindf.hit_map()`` and
        ``.bindf.plot_hit_map()`` work on it. The rule is
        :func:`bindf.analysis.apx.match_rows_columns`'s.
        """
        return self._call("match_rows_columns", same_chip_timestamp=same_chip_timestamp,
                          max_tot_difference_us=max_tot_difference_us,
                          keep_unmatched=keep_unmatched)

    # --- FLIM LABS FCS correlation curves ("fcs1") -----------------------------------

    def mean_curves(self) -> Any:
        """FCS1: the mean G(τ) of each channel pair, one row per pair × lag: the stored
        mean where the file has one, else the arithmetic mean of the acquisitions.

        Columns ``pair_index, channel_1, channel_2, lag_index, tau_us, g2, stored``
        (after the file column, file by file, for frames read with
        ``include_file_paths=``).
        """
        return self._call("mean_curves")

    def plot_correlation(self, *, curves: str = "mean", ax: Any = None) -> Any:
        """FCS1: G(τ) against τ (µs) on a log axis; one line per pair
        (``curves="mean"``) or per pair and vector (``curves="all"``)."""
        return self._call("plot_correlation", curves=curves, ax=ax)

    # --- FLIM LABS intensity tracing ("it02", and "it01" with the same columns) ------

    def rebin(self, width_us: float, *, drop_partial: bool = False) -> Any:
        """IT02/IT01: sum consecutive bins into bins of ``width_us`` (a whole multiple of the
        header's ``bin_width_micros``, else ValueError).

        Counts become uint64; the result keeps the bindf metadata with the new bin
        width. The last bin may be partial; ``drop_partial=True`` drops it. Frames read
        with ``include_file_paths=`` are rebinned file by file.
        """
        return self._call("rebin", width_us, drop_partial=drop_partial)

    def count_rate(self) -> Any:
        """IT02/IT01: counts per second of every ``ch*`` column (float64), from the header's
        ``bin_width_micros``."""
        return self._call("count_rate")

    def plot_trace(self, *, rate: bool = False, ax: Any = None) -> Any:
        """IT02/IT01: one line per channel against time; counts per bin, or counts/s with
        ``rate=True``. Labels from ``channel_names``, else "Channel i+1"."""
        return self._call("plot_trace", rate=rate, ax=ax)

    # --- FLIM LABS spectroscopy photons ("spectro") --------------------------------

    def decay_histogram(self, bins: int = 256, *,
                        laser_period_ns: float | None = None) -> Any:
        """Spectroscopy: photons per microtime bin over ``[0, laser_period_ns)`` per
        channel, markers excluded.

        Columns ``channel, bin, bin_time_ns, count``. ``laser_period_ns`` overrides the
        header's (legacy raw files have none).
        """
        return self._call("decay_histogram", bins=bins, laser_period_ns=laser_period_ns)

    def plot_decay(self, bins: int = 256, *, laser_period_ns: float | None = None,
                   ax: Any = None) -> Any:
        """Spectroscopy: the decay histogram on a log scale, one line per channel."""
        return self._call("plot_decay", bins=bins, laser_period_ns=laser_period_ns, ax=ax)
