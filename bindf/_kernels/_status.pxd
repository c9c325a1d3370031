# cython: language_level=3
"""The per-readout decoding status bits shared by the AstroPix 4 and 3 hit decoders
(``_apx.pyx``, ``_apx3.pyx``), one byte per readout: bit i is the column named
``STATUS_FLAGS[i]`` of :mod:`bindf.formats._apx_hits` (docs/formats/apx.md, "Hits
inside a payload"). Bits 0-6 are the upstream decoders' own events; bit 7 marks the
readouts where upstream fails (raises or never returns)."""

cdef enum:
    ORPHANS_MATCHED = 1
    ORPHANS_DROPPED = 2
    ORPHANS_UNUSED = 4
    EXTRA_BYTES_KEPT = 8
    EXTRA_BYTES_INVALID = 16
    INCOMPLETE_HIT_DROPPED = 32
    BYTES_UNVISITED = 64
    DECODER_FAILURE = 128
