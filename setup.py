"""The one compiled module (everything else is in pyproject.toml).

``ryng_async._speedups`` is optional: where it cannot be compiled (no C compiler), the
build goes on without it and the package uses its pure-Python twin.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ryng_async._speedups",
            sources=["ryng_async/_speedups.c"],
            optional=True,
        )
    ]
)
