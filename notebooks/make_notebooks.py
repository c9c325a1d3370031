"""Regenerate the quickstart notebooks (``python notebooks/make_notebooks.py``).

The notebooks are committed without outputs; ``tests/test_notebooks.py`` executes every
one of them, so they cannot rot.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = """\
import tempfile
from importlib.resources import files
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # headless-safe; in Jupyter, %matplotlib inline works as usual
import pandas as pd
import polars as pl

import bindf

samples = files("bindf") / "samples"
out = Path(tempfile.mkdtemp())"""

NOTEBOOKS = {
    "quickstart_astropix.ipynb": [
        new_markdown_cell("# AstroPix `.apx` quickstart\n\nRead a real AstroPix 4 threshold-"
                          "scan run (bundled with bindf), look at its header, scan it lazily, "
                          "plot it and export it to Parquet with the header kept."),
        new_code_cell(SETUP + '\npath = samples / "astropix_threshold_scan.apx"'),
        new_markdown_cell("## Read\n`pd.read_apx` is registered by `import bindf`. The hit "
                          "table has the upstream decoder's 18 columns, in its order."),
        new_code_cell("hits = pd.read_apx(path)\nprint(hits.shape)\nhits.head()"),
        new_markdown_cell("## The header travels with the frame"),
        new_code_cell('header = hits.bindf.header\nprint(header["readout_uid"])\n'
                      'sorted(header)[:10]'),
        new_markdown_cell("## Readout-level diagnostics\nOne row per readout, with the decoder's "
                          "status flags: how many hits were dropped, and why."),
        new_code_cell('readouts = bindf.read_apx(path, level="readouts", output="polars")\n'
                      'readouts.select(pl.exclude("timestamp")).sum()'),
        new_markdown_cell("## Lazy scan: projection and predicate pushdown"),
        new_code_cell('lazy = pl.scan_apx(path)\n'
                      'wide = lazy.filter(pl.col("tot_us") > 250).select("readout_id", "row", '
                      '"column", "tot_us")\nwide.collect()'),
        new_markdown_cell("## Plots (`bindf[plot]`)"),
        new_code_cell('ax = hits.bindf.plot_hit_map()\nax.figure.savefig(out / "hit_map.png")\n'
                      'hits.bindf.tot_histogram(bins=20).head()'),
        new_code_cell('ax = hits.bindf.plot_tot(bins=40)\nax.figure.savefig(out / "tot.png")'),
        new_markdown_cell("## Parquet with the header"),
        new_code_cell('hits.bindf.to_parquet(out / "run.parquet")\n'
                      'back = pd.read_parquet(out / "run.parquet")\n'
                      'assert back.attrs["bindf"]["header"] == header\n'
                      'bindf.read_parquet(out / "run.parquet", output="polars").bindf.format'),
    ],
    "quickstart_intensity_tracing.ipynb": [
        new_markdown_cell("# FLIM LABS intensity tracing (IT02) quickstart\n\nThe bundled "
                          "sample is the first 200 bins of FLIM LABS' published example "
                          "export (channels 2, 4, 5; 1 ms bins)."),
        new_code_cell(SETUP + '\npath = samples / "intensity_tracing_it02.bin"'),
        new_code_cell("trace = pl.read_it02(path)\nprint(trace.bindf.header)\ntrace.head()"),
        new_markdown_cell("## Rebin and count rates"),
        new_code_cell("coarse = trace.bindf.rebin(10_000)   # 10 ms bins\n"
                      "coarse.bindf.count_rate().head()"),
        new_markdown_cell("## Lazy scan"),
        new_code_cell('pl.scan_it02(path).filter(pl.col("ch2") > 2400).select("time_ns", "ch2")'
                      '.collect()'),
        new_markdown_cell("## Plot"),
        new_code_cell('ax = trace.bindf.plot_trace()\nax.figure.savefig(out / "trace.png")'),
        new_markdown_cell("## Parquet"),
        new_code_cell('bindf.to_parquet(trace, out / "trace.parquet")\n'
                      'bindf.read_parquet(out / "trace.parquet", output="polars").bindf.header'),
    ],
    "quickstart_spectroscopy.ipynb": [
        new_markdown_cell("# FLIM LABS spectroscopy quickstart\n\nPhoton events (STT1, a "
                          "synthetic sample since no public real file exists), plus the real "
                          "SP01 decay-curve and SPF1 phasor example exports."),
        new_code_cell(SETUP),
        new_markdown_cell("## Photon events"),
        new_code_cell('photons = pd.read_spectro(samples / "photon_events_stt1.bin")\n'
                      "print(photons.bindf.header)\nphotons.head()"),
        new_markdown_cell("Markers (frame/line/pixel) are split from photons: `channel` is null "
                          "on marker rows, `marker` null on photon rows."),
        new_code_cell('photons["marker"].value_counts(dropna=False)'),
        new_markdown_cell("## Decay histogram over the laser period"),
        new_code_cell("photons.bindf.decay_histogram(bins=32).head()"),
        new_code_cell('ax = photons.bindf.plot_decay(bins=32)\nax.figure.savefig(out / "decay.png")'),
        new_markdown_cell("## Lazy scan"),
        new_code_cell('pl.scan_spectro(samples / "photon_events_stt1.bin")'
                      '.filter(pl.col("channel") == 2).select(pl.len()).collect()'),
        new_markdown_cell("## SP01 decay curves and SPF1 phasors"),
        new_code_cell('curves = pl.read_sp01(samples / "decay_curves_sp01.bin")\n'
                      'curves.group_by("channel").agg(pl.col("count").sum())'),
        new_code_cell('phasors = pl.read_spf1(samples / "phasors_spf1.bin")\nphasors.head()'),
        new_markdown_cell("## Parquet"),
        new_code_cell('photons.bindf.to_parquet(out / "photons.parquet")\n'
                      'pd.read_parquet(out / "photons.parquet").attrs["bindf"]["format"]'),
    ],
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
