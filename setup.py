"""The compiled streaming kernel (runtime/csrc) as an optional extension: a machine without a C compiler
still installs rnnedge and runs the numpy path. Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

SOURCES = ["model.c", "f32.c", "w8.c", "q8.c", "act.c", "frontend.c", "pymod.c"]

setup(
    ext_modules=[
        Extension(
            "rnnedge.runtime._kernel",
            sources=[f"runtime/csrc/{f}" for f in SOURCES],
            depends=[
                "runtime/csrc/rnnedge.h",
                "runtime/csrc/kernel.h",
                "runtime/csrc/frontend.h",
                "runtime/csrc/pyfrontend.c",
            ],
            # Per-CPU kernels carry their own target attributes and are chosen at run time, so the baseline
            # stays portable (x86-64 / armv8-a). No FMA contraction: the int8 epilogue is plain mul + add.
            extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off", "-fno-math-errno"],
            optional=True,
        )
    ]
)
