"""Build the Cython kernels.

``BINDF_CYTHON_DEBUG=1`` compiles them with bounds, wraparound and initialisation checks
switched on, so that the whole test suite can be run once against a kernel that raises
instead of reading out of range (CI does this; see ``.ci/run``).

Every other build is a release build, without the debug information that Python's
default ``CFLAGS`` (``-g``) ask for: GCC and Clang are told not to make it (``-g0``, a
quarter less compile time), and the linker drops any that is left, which shrinks each
kernel from about 1.3 MB to about 0.25 MB. A debug build keeps it, for gdb and
sanitizers.
"""

import os
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("BINDF_CYTHON_DEBUG", "") not in ("", "0")
directives = {
    "language_level": "3",
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
}


def release_compile_args() -> list[str]:
    """No debug information in a release build's objects (GCC and Clang; MSVC makes none
    unless asked)."""
    if debug or sys.platform == "win32":
        return []
    return ["-g0"]


def release_link_args() -> list[str]:
    """Linker flags that strip debug symbols from a release build. None on Windows:
    setuptools' MSVC release flags put no debug information into the .pyd."""
    if debug:
        return []
    if sys.platform.startswith("linux"):
        return ["-Wl,--strip-debug"]
    if sys.platform == "darwin":
        return ["-Wl,-S"]  # ld64: no debug information (STABS/DWARF) in the output
    return []


# Every kernel in bindf/_kernels (_apx, _apx3, _astep, _it02 …): a new one is built, and
# checked by the debug pass of .ci/run, without a line here.
kernels = sorted(p.stem for p in Path("bindf/_kernels").glob("_*.pyx"))
extensions = [
    Extension(
        f"bindf._kernels.{name}",
        [f"bindf/_kernels/{name}.pyx"],
        # bindf/_kernels for the C headers beside the .pyx (_apx_fields.h), which the
        # debug build's C, generated under build/, must find too
        include_dirs=[np.get_include(), "bindf/_kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=release_compile_args(),
        extra_link_args=release_link_args(),
    )
    for name in kernels
]

# Cython regenerates C code when the .pyx changed, not when the directives did, so the two
# kinds of build keep their C apart: release C beside the .pyx (where the sdist picks it
# up), debug C under build/. force: a checkout whose C came from an older Cython or a
# debug build of earlier versions of this file is regenerated too (a few seconds).
# The kernels are compiled side by side, one per core (build_ext's ``parallel``): most
# of a build is the C compiler's, on seven files of about a megabyte of generated C
# each (on a 2-core machine, ~2 minutes one after another).
setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        build_dir="build/cython-debug" if debug else None,
        force=True,
    ),
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
