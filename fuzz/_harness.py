"""Shared harness of the atheris reader targets (run them with ``run_all.sh``).

Input layout and allowed outcomes: ``contract.py`` (shared with
``tests/test_fuzz_regressions.py``, which replays findings without atheris). Besides
those, libFuzzer reports AddressSanitizer errors from the Cython kernels (``run_all.sh``
builds them with ASan), timeouts (``-timeout``) and allocations over
``-malloc_limit_mb``.

``bindf`` is imported under :func:`atheris.instrument_imports`, so coverage of its Python
code guides the fuzzer. (The kernels are compiled by gcc, which cannot emit libFuzzer's
coverage callbacks: inside them ASan checks memory, but coverage is not measured.)
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["bindf"]):
    import bindf

    for _spec in bindf.list_formats():  # every format's module, to be instrumented
        _spec.reader_class()

from contract import check_input, suffix_for  # noqa: E402 - after bindf is instrumented


def fuzz_reader(target: str) -> None:
    """Fuzz the reader configurations of ``target`` (a registered format's name; see
    ``contract.configs_for``)."""
    directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix="bindf-fuzz-", suffix=suffix_for(target),
                                dir=directory)
    os.close(fd)

    def one_input(data: bytes) -> None:
        check_input(target, data, path)

    try:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
    finally:
        os.unlink(path)
