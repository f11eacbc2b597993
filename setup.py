"""Build of microgrid's compiled modules.

MICROGRID_DEBUG=1 turns bounds checks back on and builds without
optimisation, for hunting memory errors; MICROGRID_SANITIZE=address,undefined
adds the named sanitizers (run the tests with the sanitizer runtime preloaded).
"""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MICROGRID_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("MICROGRID_SANITIZE", "")

# -fno-trapping-math: no value changes (rounding and NaN, inf, signed zeros
# stay IEEE's), only FP exception flags, which nothing reads; it lets a lane
# loop compute both sides of a where() and blend them
compile_args = ["-O0", "-g3"] if DEBUG or SANITIZE else ["-O3", "-fno-trapping-math"]
link_args = []
if SANITIZE:
    compile_args += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer"]
    link_args += [f"-fsanitize={SANITIZE}"]
if sys.platform == "win32":
    compile_args, link_args = [], []

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,          # IEEE division: 1/0 is inf, not ZeroDivisionError
    "embedsignature": True,
}


# Every microgrid/<room>/_*.pyx is a compiled module (microgrid.core._engine,
# microgrid.tensors._tensor, microgrid.kernels._conv, microgrid.autograd._forward);
# each links the plain-C kernels of csrc/ (small, and it keeps the modules
# independent of each other).  A module whose .pyx starts with
# ``# distutils: language = c++`` (autograd._forward: the dual numbers of
# csrc/mg_dual.hpp) is compiled as C++, its csrc/*.c kernels still as C.
C_SOURCES = sorted(glob.glob("csrc/mg_*.c"))
# the op table and the headers derived from it: a change rebuilds every module
C_DEPENDS = sorted(glob.glob("csrc/mg_*.h") + glob.glob("csrc/mg_*.def"))
# the C++ headers, for the modules compiled as C++
CXX_DEPENDS = sorted(glob.glob("csrc/mg_*.hpp"))


def is_cxx(pyx):
    with open(pyx, encoding="utf-8") as f:
        return f.readline().strip().replace(" ", "") == "#distutils:language=c++"


def extension(pyx):
    name = os.path.splitext(pyx)[0].replace(os.sep, ".").replace("/", ".")
    return Extension(
        name,
        [pyx, *C_SOURCES],
        depends=C_DEPENDS + (CXX_DEPENDS if is_cxx(pyx) else []),
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


setup(
    ext_modules=cythonize(
        [extension(pyx) for pyx in sorted(glob.glob("microgrid/*/_*.pyx"))],
        compiler_directives=directives,
        include_path=["."],
    ),
)
