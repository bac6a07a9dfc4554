"""Builds the Cython Growing Dual Memory kernels; all metadata lives in pyproject.toml."""

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# Portable flags: the wheel must run on any x86-64 or aarch64 machine, so no -march=native.
extensions = [
    Extension(
        "clifer_edge.memory._gwr",
        ["clifer_edge/memory/_gwr.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
