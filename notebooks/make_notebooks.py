"""Build and run the notebooks: ``python notebooks/make_notebooks.py [name ...]``.

Every notebook is written from the cells listed here, executed top to bottom in a fresh
kernel, and saved **with its outputs, plots included**, so it reads on a code-hosting
page and opens in Jupyter as a finished run. Run this script after changing a notebook,
bindf's output, or the bundled samples; ``tests/test_notebooks.py`` re-executes every
notebook and fails when the committed cells or text outputs are out of date.

The notebooks force no matplotlib backend: in Jupyter (and here) figures appear through
the inline backend; the tests run the kernel with ``MPLBACKEND=Agg`` and ignore images.

Outputs are kept deterministic, so that a regenerated notebook only differs where
something really changed: no absolute paths of this machine (samples are reached through
``importlib.resources``, results go to a temporary folder whose name is never shown), no
timings, no memory addresses, no random numbers. :func:`problems` checks this before a
notebook is written. Exact text outputs depend on the versions of the libraries that
render them; :func:`library_versions` records those in the notebook's metadata, and the
test compares text outputs only under the same versions.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tempfile
import textwrap
from importlib.metadata import version
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: Libraries whose version changes how an output is rendered (frame reprs, HTML tables,
#: number formatting); recorded in each notebook under ``metadata["bindf"]``.
RENDERING_LIBRARIES = ("numpy", "pandas", "polars", "pyarrow", "matplotlib")
#: Seconds a single cell may run.
CELL_TIMEOUT = 120
#: A committed notebook must stay below this many bytes (plots are PNGs at screen dpi).
MAX_NOTEBOOK_BYTES = 1_000_000
#: A memory address in a repr (``<object at 0x7f…>``): different on every run.
ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


def md(text: str) -> NotebookNode:
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str) -> NotebookNode:
    return new_code_cell(textwrap.dedent(text).strip())


SETUP = code("""
    import tempfile
    from importlib.resources import files
    from pathlib import Path

    import pandas as pd
    import polars as pl

    import bindf

    samples = files("bindf") / "samples"  # the example files installed with bindf
    out = Path(tempfile.mkdtemp(prefix="bindf-"))  # results go here, not into your folder
""")

QUICKSTART_ASTROPIX = [
    md("""
        # AstroPix `.apx` quickstart

        Read a real AstroPix 4 threshold-scan run (bundled with bindf), look at its header,
        scan it lazily, plot it and export it to Parquet with the header kept.
    """),
    SETUP,
    code('path = samples / "astropix_threshold_scan.apx"'),
    md("""
        ## Read
        `pd.read_apx` is registered by `import bindf`. The hit table has the upstream
        decoder's 18 columns, in its order.
    """),
    code("""
        hits = pd.read_apx(path)
        print(hits.shape)
        hits.head()
    """),
    md("## The header travels with the frame"),
    code("""
        header = hits.bindf.header
        print(header["readout_uid"])
        sorted(header)[:10]
    """),
    md("""
        ## Readout-level diagnostics
        One row per readout, with the decoder's status flags: how many hits were dropped,
        and why.
    """),
    code("""
        readouts = bindf.read_apx(path, level="readouts", output="polars")
        readouts.select(pl.exclude("timestamp")).sum()
    """),
    md("## Lazy scan: projection and predicate pushdown"),
    code("""
        lazy = pl.scan_apx(path)
        wide = lazy.filter(pl.col("tot_us") > 250).select("readout_id", "row", "column", "tot_us")
        wide.collect()
    """),
    md("""
        ## Plots (`bindf[plot]`)
        Every `plot_*` helper draws with matplotlib and returns the Axes; in Jupyter the
        figure shows below the cell.
    """),
    code("hits.bindf.tot_histogram(bins=20).head()"),
    code("hits.bindf.plot_hit_map();"),
    code("hits.bindf.plot_tot(bins=40);"),
    md("## Parquet with the header"),
    code("""
        hits.bindf.to_parquet(out / "run.parquet")
        back = pd.read_parquet(out / "run.parquet")
        assert back.attrs["bindf"]["header"] == header
        bindf.read_parquet(out / "run.parquet", output="polars").bindf.format
    """),
]

QUICKSTART_INTENSITY_TRACING = [
    md("""
        # FLIM LABS intensity tracing (IT02) quickstart

        The bundled sample is the first 200 bins of FLIM LABS' published example export
        (channels 2, 4, 5; 1 ms bins).
    """),
    SETUP,
    code('path = samples / "intensity_tracing_it02.bin"'),
    code("""
        trace = pl.read_it02(path)
        print(trace.bindf.header)
        trace.head()
    """),
    md("## Rebin and count rates"),
    code("""
        coarse = trace.bindf.rebin(10_000)  # 10 ms bins
        coarse.bindf.count_rate().head()
    """),
    md("## Lazy scan"),
    code('pl.scan_it02(path).filter(pl.col("ch2") > 2350).select("time_ns", "ch2").collect()'),
    md("## Plot"),
    code("trace.bindf.plot_trace();"),
    md("## Parquet"),
    code("""
        bindf.to_parquet(trace, out / "trace.parquet")
        bindf.read_parquet(out / "trace.parquet", output="polars").bindf.header
    """),
]

QUICKSTART_SPECTROSCOPY = [
    md("""
        # FLIM LABS spectroscopy quickstart

        Photon events (STT1, a synthetic sample since no public real file exists), plus
        the real SP01 decay-curve and SPF1 phasor example exports.
    """),
    SETUP,
    md("## Photon events"),
    code("""
        photons = pd.read_spectro(samples / "photon_events_stt1.bin")
        print(photons.bindf.header)
        photons.head()
    """),
    md("""
        Markers (frame/line/pixel) are split from photons: `channel` is null on marker
        rows, `marker` null on photon rows.
    """),
    code('photons["marker"].value_counts(dropna=False)'),
    md("## Decay histogram over the laser period"),
    code("photons.bindf.decay_histogram(bins=32).head()"),
    code("photons.bindf.plot_decay(bins=32);"),
    md("## Lazy scan"),
    code("""
        (pl.scan_spectro(samples / "photon_events_stt1.bin")
           .filter(pl.col("channel") == 2).select(pl.len()).collect())
    """),
    md("## SP01 decay curves and SPF1 phasors"),
    code("""
        curves = pl.read_sp01(samples / "decay_curves_sp01.bin")
        curves.group_by("channel").agg(pl.col("count").sum()).sort("channel")
    """),
    code("""
        phasors = pl.read_spf1(samples / "phasors_spf1.bin")
        phasors.head()
    """),
    md("## Parquet"),
    code("""
        photons.bindf.to_parquet(out / "photons.parquet")
        pd.read_parquet(out / "photons.parquet").attrs["bindf"]["format"]
    """),
]

ANALYSIS = [
    md("""
        # From raw files to answers

        Two questions, each walked from a raw instrument file to a result saved as
        Parquet, with bindf's readers and analysis helpers plus a few lines of polars and
        numpy:

        1. **AstroPix:** a test charge was injected into one pixel, again and again. Did
           every injection give exactly one hit, in that pixel, and how steady is the
           pulse height the chip measured?
        2. **FLIM LABS:** what is the fluorescence lifetime in each channel?

        Everything here runs from a clone or an installed bindf: the data are the samples
        bundled in `bindf/samples`.
    """),
    code("""
        import tempfile
        from importlib.resources import files
        from pathlib import Path

        import matplotlib.pyplot as plt
        import numpy as np
        import polars as pl

        import bindf

        samples = files("bindf") / "samples"  # the example files installed with bindf
        out = Path(tempfile.mkdtemp(prefix="bindf-analysis-"))  # results go here
    """),
    md("""
        ## 1. AstroPix: does the injected pixel respond cleanly?

        The bundled `.apx` file is one point of a threshold scan on an AstroPix 4 chip.
        The injection board pulses a test charge into a single pixel at a steady rate;
        whenever the chip has hits, the DAQ reads it out and writes the readout to the
        file. The run's command-line arguments are in the header, so the file itself says
        what was done.
    """),
    code("""
        path = samples / "astropix_threshold_scan.apx"
        hits = pl.read_apx(path)
        args = hits.bindf.header["args"]
        injected = tuple(args["inject"])  # (row, column)
        print(f"{hits.height} hits")
        print(f"injection into pixel (row, column) = {injected}: {args['vinj']:g} mV, "
              f"threshold {args['threshold']:g} mV, run of {args['maxtime']:g} min")
    """),
    md("""
        ### Did the decoder keep every hit?

        Before counting hits, check that nothing was lost on the way. Reading at
        `level="readouts"` gives one row per readout with the decoder's status flags
        (orphan bytes, incomplete hits dropped, bytes never visited, outright decoder
        failures). Summed over the run, every flag should be zero.
    """),
    code("""
        readouts = bindf.read_apx(path, level="readouts", output="polars")
        flags = readouts.select(pl.col(pl.Boolean).sum())
        print(f"{readouts.height} readouts, {readouts['n_hits'].sum()} hits framed")
        flags
    """),
    md("""
        ### Hits per readout

        If the pixel answers each injection once, every readout holds one hit and the
        readouts come at the injection period. The `hits_per_readout` helper counts the
        hits (readouts with no hit at all are not in a hit table, so the readout table
        above is the place to look for those).
    """),
    code("""
        per_readout = hits.bindf.hits_per_readout()
        print(f"readouts without a hit: {readouts.filter(pl.col('n_hits') == 0).height}")
        per_readout["hits"].value_counts().sort("hits")
    """),
    md("""
        The one readout with two hits, and the time between readouts: a missed injection
        would leave a gap of two periods.
    """),
    code("""
        double = per_readout.filter(pl.col("hits") > 1)["readout_id"]
        display(hits.filter(pl.col("readout_id").is_in(double.to_list()))
                    .select("readout_id", "chip_id", "row", "column", "tot_us"))
        gaps_ms = per_readout["timestamp"].diff().drop_nulls().cast(pl.Float64) / 1e6
        print(f"time between readouts: median {gaps_ms.median():.1f} ms, "
              f"5-95 % range {gaps_ms.quantile(0.05):.1f}-{gaps_ms.quantile(0.95):.1f} ms, "
              f"longest {gaps_ms.max():.1f} ms")
    """),
    code("hits.bindf.plot_hits_per_readout();"),
    md("""
        ### Where do the hits land?

        The hit map counts hits on every pixel of the chip's 13 × 16 matrix, zeros
        included, so a pixel that fires when it should not would show up here.
    """),
    code("""
        hit_map = hits.bindf.hit_map()
        print(f"pixels with hits: {hit_map.filter(pl.col('hits') > 0).height} of {hit_map.height}")
        hit_map.filter(pl.col("hits") > 0)
    """),
    code("hits.bindf.plot_hit_map();"),
    md("""
        ### Time over threshold, per pixel

        The ToT (µs the pulse stays above threshold) measures the injected charge. With
        `by="pixel"` the histogram has one set of bins per pixel; the same edges for all,
        so pixels compare bin by bin. A polars aggregation gives the summary numbers.
    """),
    code("""
        tot_edges = np.arange(0, 310, 10.0)  # 10 µs bins
        tot_per_pixel = hits.bindf.tot_histogram(by="pixel", bins=tot_edges)
        tot_per_pixel.filter(pl.col("count") > 0)
    """),
    code("""
        tot_summary = (
            hits.group_by("chip_id", "row", "column")
            .agg(
                pl.len().alias("hits"),
                pl.col("tot_us").median().alias("tot_median_us"),
                pl.col("tot_us").mean().alias("tot_mean_us"),
                pl.col("tot_us").std().alias("tot_std_us"),
                (pl.col("tot_us") < 100).sum().alias("hits_below_100us"),
            )
            .sort("chip_id", "row", "column")
        )
        tot_summary
    """),
    code("""
        ax = hits.bindf.plot_tot(bins=tot_edges)
        ax.set_yscale("log")
    """),
    md("""
        **Answer.** The readouts come every 78 ms with no gap of two periods, every one
        holds a hit, and every hit is in the injected pixel: no injection went unseen, no
        other pixel fired during the run, and the decoder dropped nothing. The ToT is
        steady (standard deviation about 8 % of the median). Exactly one readout is
        different: it holds a second hit in the same pixel with a ToT far below the rest,
        the only hit under 100 µs.

        ### Save the results

        The hit table goes to Parquet with its header (`df.bindf.to_parquet`), so the run
        configuration stays with the data; the per-pixel summary is a plain table.
    """),
    code("""
        hits.bindf.to_parquet(out / "injection_hits.parquet")
        tot_summary.write_parquet(out / "tot_per_pixel.parquet")

        back = bindf.read_parquet(out / "injection_hits.parquet", output="polars")
        assert back.equals(hits) and back.bindf.header == hits.bindf.header
        sorted(p.name for p in out.iterdir())
    """),
    md("""
        ## 2. FLIM LABS: a fluorescence lifetime

        After each laser pulse, a fluorophore emits a photon after a random delay: for a
        single species, exponential with mean τ, the lifetime. Histogramming the photons'
        delays after the pulse (the *microtime*) over one laser period gives the decay
        curve; the lifetime is its time constant.

        ### First, the real SP01 export

        The bundled SP01 file is the start of FLIM LABS' published example export: decay
        curves (256 bins over the 25 ns laser period) every 100 ms. Summed over time, does
        it hold a decay?
    """),
    code("""
        curves = pl.read_sp01(samples / "decay_curves_sp01.bin")
        print(f"laser period {curves.bindf.header['laser_period_ns']:g} ns")
        summed = (curves.group_by("channel", "bin").agg(pl.col("count").sum())
                  .sort("channel", "bin"))
        summed.group_by("channel", maintain_order=True).agg(
            pl.col("count").sum().alias("photons"),
            pl.col("count").head(32).mean().alias("first_eighth_mean"),
            pl.col("count").tail(32).mean().alias("last_eighth_mean"),
            (pl.col("count").var() / pl.col("count").mean()).alias("variance_over_mean"),
        )
    """),
    md("""
        No: the first and last eighths of the period hold as many photons per bin, and
        the bin-to-bin scatter is about what Poisson noise alone gives (variance ≈ mean).
        The bundled part of the example export is flat, like background light, so there
        is no lifetime to fit in it.

        ### Photon events with known lifetimes

        The bundled STT1 photon stream is synthetic (no public real file exists), made by
        `bindf/samples/make_spectro_sample.py` with known lifetimes: **2.5 ns in channel 0,
        4.0 ns in channel 2**, laser period 12.5 ns. That makes it a test of the
        estimator: the fit must recover those numbers within its stated uncertainty.
        `decay_histogram` bins the microtimes of the photons (markers left out).
    """),
    code("""
        photons = pl.read_spectro(samples / "photon_events_stt1.bin")
        period = photons.bindf.header["laser_period_ns"]
        TRUE_TAU_NS = {0: 2.5, 2: 4.0}  # what make_spectro_sample.py drew from
        decay = photons.bindf.decay_histogram(bins=25)  # 0.5 ns bins
        decay.group_by("channel", maintain_order=True).agg(pl.col("count").sum().alias("photons"))
    """),
    md(r"""
        ### The estimator: Poisson maximum likelihood

        *Model.* Laser pulses repeat every period $T$, so a photon delayed by $t + kT$
        shows up at microtime $t$. Summed over $k$, the microtimes on $[0, T)$ follow
        $\propto e^{-t/\tau}$: an exponential truncated to one period. The probability
        that a photon falls in bin $[a_j, b_j)$ is
        $$p_j(\tau) = \frac{e^{-a_j/\tau} - e^{-b_j/\tau}}{1 - e^{-T/\tau}}.$$

        *Fit.* With $n_j$ photons in bin $j$, the log-likelihood is
        $\ln L(\tau) = \sum_j n_j \ln p_j(\tau)$ (Poisson counts, conditioned on
        their total). It is evaluated on a fine logarithmic grid of τ in one numpy expression;
        the best τ maximises it, and the 68 % interval is where $\ln L$ is within ½ of its
        maximum. A maximum at the edge of the grid means the data resolve no decay.

        *Why not a straight line through log(counts)?* The log-linear fit is the textbook
        shortcut, but with a hundred photons many bins hold 0–3 counts: empty bins must
        be dropped (log 0), and the log of a small count is biased, so the answer moves
        with the binning. The likelihood uses every bin, empty ones too. Real data would
        also need a background term and the instrument response (fit the tail after the
        peak, or reconvolve), which this synthetic sample does not have.
    """),
    code('''
        TAU_GRID_NS = np.geomspace(0.05, 500.0, 20_001)  # candidate lifetimes, 0.05 % apart


        def fit_lifetime(counts, edges, period):
            """Maximum-likelihood lifetime (ns) of a mono-exponential decay histogrammed
            over one laser period, with its 68 % interval: (tau, low, high)."""
            tau = TAU_GRID_NS[:, None]
            survival = np.exp(-edges[None, :] / tau)  # e^(-t/tau) at every bin edge
            p = (survival[:, :-1] - survival[:, 1:]) / (1 - np.exp(-period / tau))
            loglik = (counts * np.log(p)).sum(axis=1)
            best = int(loglik.argmax())
            if best in (0, len(TAU_GRID_NS) - 1):
                return np.nan, np.nan, np.nan  # no decay resolved within the grid
            inside = TAU_GRID_NS[loglik >= loglik[best] - 0.5]
            return TAU_GRID_NS[best], inside.min(), inside.max()


        def loglinear_lifetime(counts, edges):
            """The textbook shortcut, for comparison: weighted line through log(counts)."""
            centres = (edges[:-1] + edges[1:]) / 2
            seen = counts > 0  # log(0) is undefined: empty bins must be dropped
            slope, _ = np.polyfit(centres[seen], np.log(counts[seen]), 1, w=np.sqrt(counts[seen]))
            return -1 / slope
    '''),
    code("""
        rows = []
        for (channel,), part in decay.group_by("channel", maintain_order=True):
            counts = part["count"].to_numpy()
            edges = np.append(part["bin_time_ns"].to_numpy(), period)
            tau, low, high = fit_lifetime(counts, edges, period)
            rows.append({"channel": channel, "photons": int(counts.sum()), "tau_ns": tau,
                         "tau_low_ns": low, "tau_high_ns": high,
                         "true_tau_ns": TRUE_TAU_NS[channel]})
        lifetimes = pl.DataFrame(rows)
        # A gross-error check that only a synthetic sample allows: truth within 3 sigma.
        half_width = (lifetimes["tau_high_ns"] - lifetimes["tau_low_ns"]) / 2
        assert ((lifetimes["tau_ns"] - lifetimes["true_tau_ns"]).abs() < 3 * half_width).all()
        lifetimes
    """),
    md("""
        Both 68 % intervals contain the true lifetime. With about 90 photons per channel
        they are some ±12 % wide: τ/√N, a little more because the period cuts the tail
        off. Now the binning test: the likelihood estimate hardly moves with the number
        of bins, while the log-linear one drifts upwards by a third or more, away from
        the truth.
    """),
    code("""
        comparison = []
        for bins in (10, 25, 50):
            histogram = photons.bindf.decay_histogram(bins=bins)
            for (channel,), part in histogram.group_by("channel", maintain_order=True):
                counts = part["count"].to_numpy()
                edges = np.append(part["bin_time_ns"].to_numpy(), period)
                comparison.append({"bins": bins, "channel": channel,
                                   "likelihood_tau_ns": fit_lifetime(counts, edges, period)[0],
                                   "loglinear_tau_ns": loglinear_lifetime(counts, edges)})
        pl.DataFrame(comparison).pivot("bins", index="channel",
                                       values=["likelihood_tau_ns", "loglinear_tau_ns"])
    """),
    code("""
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for ax, ((channel,), part) in zip(axes, decay.group_by("channel", maintain_order=True)):
            counts = part["count"].to_numpy()
            edges = np.append(part["bin_time_ns"].to_numpy(), period)
            fit = lifetimes.row(by_predicate=pl.col("channel") == channel, named=True)
            survival = np.exp(-edges / fit["tau_ns"])
            expected = counts.sum() * (survival[:-1] - survival[1:]) / (1 - survival[-1])
            ax.stairs(counts, edges, label="photons")
            ax.stairs(expected, edges, label=f"fit: τ = {fit['tau_ns']:.2f} ns")
            ax.set_yscale("log")
            ax.set_title(f"Channel {channel} (true τ = {fit['true_tau_ns']:g} ns)")
            ax.set_xlabel("Microtime [ns]")
            ax.legend()
        axes[0].set_ylabel("Photons per 0.5 ns bin");
    """),
    md("""
        **Answer.** τ = 2.7 ns in channel 0 and 3.6 ns in channel 2, each about ±12 %,
        in agreement with the 2.5 ns and 4.0 ns the sample was made with.

        ### Save the results
    """),
    code("""
        lifetimes.write_parquet(out / "lifetimes.parquet")
        pl.read_parquet(out / "lifetimes.parquet").select("channel", "tau_ns", "true_tau_ns")
    """),
]

LIVE_ACQUISITION = [
    md("""
        # Live acquisition: follow a run while it is written

        `bindf.follow` yields the rows that became complete since the last poll, never part
        of a readout, nothing repeated or lost. Here a thread plays the instrument: it
        replays the bundled AstroPix run into a new file in small, uneven pieces (cut
        anywhere, header included), with pauses, as a DAQ flushing its buffer would; it
        starts in the next cell, together with the follower.
    """),
    SETUP,
    code("""
        import random
        import threading
        import time

        source = (samples / "astropix_threshold_scan.apx").read_bytes()
        live = out / "live.apx"

        def instrument() -> None:
            rng = random.Random(1)
            with open(live, "wb") as f:
                i = 0
                while i < len(source):
                    n = rng.randint(1, 1500)
                    f.write(source[i:i + n])
                    f.flush()
                    i += n
                    time.sleep(rng.uniform(0.0, 0.1))
    """),
    md("""
        ## A hit map that updates as the run grows
        The follower starts before the file exists and waits for it. Each frame adds its
        hits to the map, and the figure is redrawn in place. Following ends after
        `idle_timeout` seconds without growth (an IT02 file ends at its end marker).
    """),
    code("""
        import io

        import matplotlib.pyplot as plt
        import numpy as np
        from IPython.display import Image, display


        def png(fig) -> Image:  # the figure as an image, whatever matplotlib's backend
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=72)
            return Image(buffer.getvalue())

        counts = np.zeros((13, 16), dtype=np.int64)  # AstroPix 4 pixel grid: rows x columns
        fig, ax = plt.subplots(figsize=(5, 4))
        image = ax.imshow(counts, origin="lower", cmap="viridis", vmin=0)
        fig.colorbar(image, ax=ax, label="hits")
        ax.set_xlabel("column")
        ax.set_ylabel("row")
        plt.close(fig)  # shown, and redrawn, through the display handle only
        handle = display(png(fig), display_id=True)

        writer = threading.Thread(target=instrument)  # the run starts now
        writer.start()
        frames = []
        with bindf.follow(live, poll_interval=0.05, idle_timeout=1.0) as follower:
            for frame in follower:
                frames.append(frame)
                np.add.at(counts, (frame["row"].to_numpy(), frame["column"].to_numpy()), 1)
                image.set_data(counts)
                image.set_clim(0, max(counts.max(), 1))
                ax.set_title(f"{counts.sum()} hits")
                handle.update(png(fig))
        writer.join()
        print("several frames:", len(frames) > 1, "| ended by:", follower.ended_by)
    """),
    md("""
        ## Exactly the finished file
        The frames put together equal a read of the finished file, and each carries the
        header.
    """),
    code("""
        followed = pd.concat(frames, ignore_index=True)
        print(len(followed), "hits; equal to bindf.read of the finished file:",
              followed.equals(bindf.read_apx(live)))
        frames[-1].bindf.header["readout_uid"]
    """),
    md("""
        From a terminal, `bindf follow run.apx -o run.parquet` shows a live status line and
        streams the rows into a Parquet file that is finished properly on Ctrl-C.
    """),
]

#: File name → cells, in the order the tests list them.
NOTEBOOKS: dict[str, list[NotebookNode]] = {
    "analysis_walkthrough.ipynb": ANALYSIS,
    "live_acquisition.ipynb": LIVE_ACQUISITION,
    "quickstart_astropix.ipynb": QUICKSTART_ASTROPIX,
    "quickstart_intensity_tracing.ipynb": QUICKSTART_INTENSITY_TRACING,
    "quickstart_spectroscopy.ipynb": QUICKSTART_SPECTROSCOPY,
}


def build(name: str) -> NotebookNode:
    """The notebook ``name`` as written in :data:`NOTEBOOKS`, without outputs."""
    cells = copy.deepcopy(NOTEBOOKS[name])
    for number, cell in enumerate(cells):
        cell.id = f"cell-{number:02d}"  # nbformat draws random ids; keep diffs small
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })


def library_versions() -> dict[str, str]:
    """Versions of the libraries that render the outputs (see :data:`RENDERING_LIBRARIES`)."""
    return {name: version(name) for name in RENDERING_LIBRARIES}


def execute(notebook: NotebookNode, workdir: Path, *, mpl_backend: str | None = None) -> None:
    """Run ``notebook`` in place in a fresh ``python3`` kernel started in ``workdir``.

    ``mpl_backend=None`` lets the kernel pick its own (the inline backend, which puts
    PNGs in the outputs, as in Jupyter); the tests pass ``"Agg"``. Timings are not
    recorded and stream outputs are merged, so outputs are reproducible.
    """
    import nbclient  # imported here: the tests skip when it is missing

    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    if mpl_backend is not None:
        env["MPLBACKEND"] = mpl_backend
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=env)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
            cell.metadata.pop("execution", None)
    # The kernel fills in its Python version; keep the metadata stable across machines.
    notebook.metadata["language_info"] = {"name": "python"}


def merge_streams(outputs: list[NotebookNode]) -> list[NotebookNode]:
    """Consecutive stream outputs of the same stream as one (the kernel may split a
    print into several messages)."""
    merged: list[NotebookNode] = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.output_type == "stream" and previous is not None
                and previous.output_type == "stream" and previous.name == output.name):
            previous.text += output.text
        else:
            merged.append(output)
    return merged


def text_outputs(notebook: NotebookNode) -> list[list[tuple[str, str]]]:
    """Per code cell, its outputs as ``(kind, text)`` pairs, for comparing two runs.

    Kept: streams, errors and every ``text/*`` representation of a result. Left out:
    any output that carries an image (a figure's PNG and its ``<Figure size …>`` label),
    execution counts and metadata.
    """
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        texts = []
        for output in merge_streams(cell.get("outputs", [])):
            kind = output.output_type
            if kind == "stream":
                texts.append((f"stream:{output.name}", output.text))
            elif kind == "error":
                texts.append(("error", f"{output.ename}: {output.evalue}"))
            elif not any(mime.startswith("image/") for mime in output.data):
                texts.extend((mime, _text(value)) for mime, value in sorted(output.data.items())
                             if mime.startswith("text/"))
        cells.append(texts)
    return cells


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def machine_paths() -> list[str]:
    """Absolute paths of this machine that must never appear in an output."""
    paths = {str(REPO), str(Path.home()), tempfile.gettempdir(), sys.prefix}
    return sorted(p for p in paths if len(p) > 1)


def problems(notebook: NotebookNode) -> list[str]:
    """Why ``notebook``'s outputs would not be reproducible or readable elsewhere."""
    found = []
    paths = machine_paths()
    for number, texts in enumerate(text_outputs(notebook)):
        for kind, text in texts:
            if kind == "error":
                found.append(f"code cell {number} raised {text}")
            if kind == "stream:stderr":
                found.append(f"code cell {number} wrote to stderr: {text[:200]!r}")
            if ADDRESS.search(text):
                found.append(f"code cell {number} shows a memory address ({kind})")
            found.extend(f"code cell {number} shows the machine path {path!r} ({kind})"
                         for path in paths if path in text)
    size = len(nbformat.writes(notebook).encode())
    if size > MAX_NOTEBOOK_BYTES:
        found.append(f"the notebook has {size} bytes, more than {MAX_NOTEBOOK_BYTES}")
    return found


def make(name: str) -> NotebookNode:
    """Build, execute and check the notebook ``name``; return it with its outputs."""
    notebook = build(name)
    execute(notebook, HERE)
    found = problems(notebook)
    if found:
        raise RuntimeError(f"{name}:\n  " + "\n  ".join(found))
    notebook.metadata["bindf"] = {"generated_with": library_versions()}
    return notebook


def main(argv: list[str]) -> None:
    names = argv or list(NOTEBOOKS)
    unknown = sorted(set(names) - set(NOTEBOOKS))
    if unknown:
        raise SystemExit(f"unknown notebook(s) {unknown}; known: {sorted(NOTEBOOKS)}")
    for name in names:
        nbformat.write(make(name), HERE / name)
        print(f"wrote {name} ({(HERE / name).stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
