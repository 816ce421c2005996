"""onnxruntime's C API from Python, through the tiny C shim ``_ortshim``.

Python cannot register an allocator with onnxruntime by itself. The shim is a
custom-op library: onnxruntime calls its ``RegisterCustomOps(options,
api_base)`` with the ``OrtApiBase`` of the very onnxruntime Python uses, and
the shim keeps that pointer. From it ctypes reaches the ``OrtApi`` function
table; the slot numbers below are its (append-only, stable) layout as declared
in onnxruntime's public ``onnxruntime_c_api.h`` (API version 13, which every
newer onnxruntime serves unchanged). :func:`ort_api` checks the table before
use: the version string must be onnxruntime's own, and a CPU memory info made
through the table must read back its name.

The shim is compiled at install time (``setup.py``). When running from a
source tree without a build, :func:`shim_path` compiles it once with ``gcc``
into ``~/.cache/olla-onnx`` (override with ``OLLA_ONNX_CACHE``).
"""

from __future__ import annotations

import ctypes as C
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from olla_onnx.errors import OllaInputError

# Slots of struct OrtApi (onnxruntime_c_api.h, counted from 0).
SLOT_GET_ERROR_MESSAGE = 2
SLOT_CREATE_ENV = 3
SLOT_CREATE_CPU_MEMORY_INFO = 69
SLOT_MEMORY_INFO_GET_NAME = 71
SLOT_RELEASE_STATUS = 93
SLOT_RELEASE_MEMORY_INFO = 94
SLOT_REGISTER_ALLOCATOR = 176
SLOT_UNREGISTER_ALLOCATOR = 177
ORT_API_VERSION_USED = 13

OrtAllocType = 0  # OrtDeviceAllocator
OrtMemTypeDefault = 0
ORT_LOGGING_LEVEL_WARNING = 2

ALLOC_FN = C.CFUNCTYPE(C.c_void_p, C.c_void_p, C.c_size_t)
FREE_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_void_p)
INFO_FN = C.CFUNCTYPE(C.c_void_p, C.c_void_p)


class OrtAllocatorStruct(C.Structure):
    """``struct OrtAllocator`` up to ``Reserve`` (version 18): what onnxruntime reads of it."""

    _fields_ = [
        ("version", C.c_uint32),
        ("Alloc", ALLOC_FN),
        ("Free", FREE_FN),
        ("Info", INFO_FN),
        ("Reserve", ALLOC_FN),
    ]


_SRC = Path(__file__).with_name("_ortshim.c")


def _cache_dir() -> Path:
    return Path(os.environ.get("OLLA_ONNX_CACHE", Path.home() / ".cache" / "olla-onnx"))


@lru_cache(maxsize=1)
def shim_path() -> Path:
    """Path of the compiled shim: the installed one, else one built now with gcc (cached)."""
    here = Path(__file__).parent
    built = sorted(here.glob("_ortshim*.so"))
    if built:
        return built[0]
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None or not _SRC.exists():
        raise OllaInputError(
            "the onnxruntime shim is not built and no C compiler was found; reinstall with `pip install .` on a machine with gcc"
        )
    out = _cache_dir() / "libollaortshim.so"
    if not out.exists() or out.stat().st_mtime < _SRC.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-o", str(tmp), str(_SRC)], check=True)
        os.replace(tmp, out)
    return out


@dataclass(frozen=True)
class OrtApi:
    """The few OrtApi functions olla-onnx calls, bound through ctypes; one per process."""

    version: str
    env: int
    cpu_memory_info: int
    get_error_message: object
    release_status: object
    register_allocator: object
    unregister_allocator: object

    def check(self, status: int | None, what: str) -> None:
        """Raise RuntimeError with onnxruntime's message if ``status`` is an error."""
        if status:
            msg = self.get_error_message(status)
            self.release_status(status)
            raise RuntimeError(f"onnxruntime {what} failed: {msg.decode(errors='replace') if msg else '?'}")


_lock = threading.Lock()
_api: OrtApi | None = None
_options_keepalive: list = []


def _api_base() -> int:
    import onnxruntime as ort

    path = str(shim_path())
    lib = C.CDLL(path)
    lib.olla_ort_api_base.restype = C.c_void_p
    base = lib.olla_ort_api_base()
    if not base:
        opts = ort.SessionOptions()
        opts.register_custom_ops_library(path)  # onnxruntime calls RegisterCustomOps now
        _options_keepalive.append(opts)
        base = lib.olla_ort_api_base()
    if not base:
        raise RuntimeError("onnxruntime did not call the shim's RegisterCustomOps")
    return int(base)


def ort_api() -> OrtApi:
    """Bind and verify the OrtApi table of the loaded onnxruntime (once per process)."""
    global _api
    with _lock:
        if _api is not None:
            return _api
        import onnxruntime as ort

        base = _api_base()
        table = (C.c_void_p * 2).from_address(base)
        get_api = C.CFUNCTYPE(C.c_void_p, C.c_uint32)(table[0])
        get_version = C.CFUNCTYPE(C.c_char_p)(table[1])
        version = get_version().decode()
        if version != ort.__version__.split("+")[0]:
            raise RuntimeError(f"the shim sees onnxruntime {version}, Python imports {ort.__version__}")
        api = get_api(ORT_API_VERSION_USED)
        if not api:
            raise RuntimeError(f"onnxruntime {version} does not serve OrtApi version {ORT_API_VERSION_USED}")
        slots = (C.c_void_p * 200).from_address(api)

        def fn(slot: int, restype, *argtypes):
            return C.CFUNCTYPE(restype, *argtypes)(slots[slot])

        get_error_message = fn(SLOT_GET_ERROR_MESSAGE, C.c_char_p, C.c_void_p)
        release_status = fn(SLOT_RELEASE_STATUS, None, C.c_void_p)
        create_env = fn(SLOT_CREATE_ENV, C.c_void_p, C.c_int, C.c_char_p, C.POINTER(C.c_void_p))
        create_cpu_mi = fn(SLOT_CREATE_CPU_MEMORY_INFO, C.c_void_p, C.c_int, C.c_int, C.POINTER(C.c_void_p))
        mi_name = fn(SLOT_MEMORY_INFO_GET_NAME, C.c_void_p, C.c_void_p, C.POINTER(C.c_char_p))
        register = fn(SLOT_REGISTER_ALLOCATOR, C.c_void_p, C.c_void_p, C.c_void_p)
        unregister = fn(SLOT_UNREGISTER_ALLOCATOR, C.c_void_p, C.c_void_p, C.c_void_p)

        def check(status, what):
            if status:
                msg = get_error_message(status)
                release_status(status)
                raise RuntimeError(f"onnxruntime {what} failed: {msg!r}")

        mi = C.c_void_p()
        check(create_cpu_mi(OrtAllocType, OrtMemTypeDefault, C.byref(mi)), "CreateCpuMemoryInfo")
        name = C.c_char_p()
        check(mi_name(mi, C.byref(name)), "MemoryInfoGetName")
        if name.value != b"Cpu":  # the slot layout is not the one this module was written for
            raise RuntimeError(f"unexpected OrtApi layout in onnxruntime {version} (memory info name {name.value!r})")
        env = C.c_void_p()
        # CreateEnv returns the process-wide environment Python's sessions already use.
        check(create_env(ORT_LOGGING_LEVEL_WARNING, b"olla-onnx", C.byref(env)), "CreateEnv")
        _api = OrtApi(version, int(env.value), int(mi.value), get_error_message, release_status, register, unregister)
        return _api
