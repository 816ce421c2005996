"""Build hook: compile the tiny C shim that hands onnxruntime's C API to Python.

Everything else lives in pyproject.toml. The shim needs only a C compiler (no
onnxruntime headers); it is loaded with ctypes, never imported.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "olla_onnx.runtime._ortshim",
            sources=["olla_onnx/runtime/_ortshim.c"],
            extra_compile_args=["-O2", "-fvisibility=hidden"],
        )
    ]
)
