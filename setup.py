"""Builds the Cython Growing Dual Memory kernels; all metadata lives in pyproject.toml.

The data files make the same source tree the ROS 2 package ``clifer_edge`` when colcon builds it
(ament_python, see ``package.xml`` and ``ros2_ws/``): the ament index marker, the manifest, the
launch file and the parameters file. A pip install puts them under ``<prefix>/share`` too, which
is where ``ros2 launch`` and ``FindPackageShare`` look.
"""

from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Distribution, Extension, setup


class _Distribution(Distribution):
    """setuptools with ``python_requires`` kept as text after reading pyproject.toml.

    colcon (colcon-python-setup-py 0.2.x) reads the setup data back with ``ast.literal_eval``,
    which fails on the ``SpecifierSet`` object setuptools makes of ``requires-python``; the text
    form means the same to setuptools and pip.
    """

    def parse_config_files(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().parse_config_files(*args, **kwargs)
        for holder in (self, self.metadata):
            if getattr(holder, "python_requires", None) is not None:
                holder.python_requires = str(holder.python_requires)


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

# Targets relative to the install prefix; sources relative to the project root, where pip and
# colcon run this file.
data_files = [
    ("share/ament_index/resource_index/packages", ["resource/clifer_edge"]),
    ("share/clifer_edge", ["package.xml"]),
    ("share/clifer_edge/launch", sorted(glob("launch/*.launch.py"))),
    ("share/clifer_edge/config", sorted(glob("config/*.yaml"))),
]

setup(
    distclass=_Distribution,
    data_files=data_files,
    ext_modules=cythonize(
        extensions,
        quiet=True,  # colcon parses setup.py's stdout
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
