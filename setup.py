"""Build the Cython kernels.

``BINDF_CYTHON_DEBUG=1`` compiles them with bounds, wraparound and initialisation checks
switched on, so that the whole test suite can be run once against a kernel that raises
instead of reading out of range (CI does this; see ``.ci/run``).
"""

import os
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

# Every kernel in bindf/_kernels (_apx, _apx3, _astep, _it02 …): a new one is built, and
# checked by the debug pass of .ci/run, without a line here.
kernels = sorted(p.stem for p in Path("bindf/_kernels").glob("_*.pyx"))
extensions = [
    Extension(
        f"bindf._kernels.{name}",
        [f"bindf/_kernels/{name}.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in kernels
]

# force: a debug build must regenerate the C code even when the .pyx did not change.
setup(ext_modules=cythonize(extensions, compiler_directives=directives, force=debug))
