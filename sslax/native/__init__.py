"""Native CPU kernels, compiled for the host CPU on first use and called through XLA's FFI.

XLA-CPU has no fast path for the weight gradient of a small-channel convolution and runs its
forward pass at about half of what the core can do (issue 13, BENCHMARKS.md), so `conv.cc`
computes both directly: register-blocked GEMMs over the padded input rows, with no im2col
copy (the input gradient of an unstrided convolution is a forward one). It is C++ against the header-only XLA FFI API
that jaxlib ships (`jax.ffi.include_dir()`), built with the host's C++ compiler and
`-march=native` (so it uses AVX-512 where the CPU has it) into a per-user cache keyed by
the source, jaxlib's version, the compiler and the CPU, then registered as an FFI target.

Nothing is downloaded. Where no compiler is found or the build fails, `load()` returns the
reason and the callers (`sslax.models.conv`) fall back to their XLA path; asking for the
kernel explicitly (`model.conv_impl='native'`) turns that reason into an error.

Environment:
  SSLAX_NATIVE_CACHE: the build cache directory (default `$XDG_CACHE_HOME/sslax/native` or
    `~/.cache/sslax/native`).
  CXX: the C++ compiler (default the first of c++, g++, clang++ on PATH).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jaxlib

CONV_FORWARD_TARGET = "sslax_conv_forward"
CONV_WEIGHT_GRAD_TARGET = "sslax_conv_weight_grad"
_SOURCE = Path(__file__).with_name("conv.cc")
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


class NativeBuildError(RuntimeError):
  """The native kernels could not be built or loaded on this host."""


def cache_dir() -> Path:
  """Where built kernels are kept (`SSLAX_NATIVE_CACHE`, else the user's cache directory)."""
  if os.environ.get("SSLAX_NATIVE_CACHE"):
    return Path(os.environ["SSLAX_NATIVE_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "sslax" / "native"


def find_compiler() -> str | None:
  """The C++ compiler to build with: `$CXX`, else c++, g++ or clang++ on PATH; None if none."""
  if os.environ.get("CXX"):
    return shutil.which(os.environ["CXX"]) or os.environ["CXX"]
  for name in ("c++", "g++", "clang++"):
    found = shutil.which(name)
    if found:
      return found
  return None


def _cpu_signature() -> str:
  """What `-march=native` depends on: the CPU model and its instruction-set flags."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor() or platform.machine()


def _library_path(compiler: str) -> Path:
  key = hashlib.sha256()
  for part in (_SOURCE.read_bytes(), jaxlib.__version__.encode(), compiler.encode(), " ".join(_FLAGS).encode(),
               platform.machine().encode(), _cpu_signature().encode()):
    key.update(part)
    key.update(b"\0")
  return cache_dir() / f"conv-{key.hexdigest()[:20]}.so"


def build() -> Path:
  """Builds the kernel library for this host, or returns the cached build.

  Returns:
    The shared library's path.

  Raises:
    NativeBuildError: no compiler, or the compiler failed (its message is included).
  """
  compiler = find_compiler()
  if compiler is None:
    raise NativeBuildError("no C++ compiler found (set CXX, or install g++ or clang++)")
  target = _library_path(compiler)
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  # Build beside the target and rename into place: processes of one host that build at the
  # same moment each write their own file, and a reader never sees a half-written library.
  fd, partial = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
  os.close(fd)
  command = [compiler, *_FLAGS, "-I", jax.ffi.include_dir(), str(_SOURCE), "-o", partial]
  try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
      raise NativeBuildError(f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
                             f"{result.stderr.strip()[-2000:]}")
    os.replace(partial, target)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise NativeBuildError(f"`{' '.join(command)}` could not run: {e}") from e
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return target


@functools.cache
def _load() -> tuple[int, str | None]:
  """Builds, loads and registers the kernels once per process: (vector lanes, None) or (0, reason)."""
  if platform.system() != "Linux" and platform.system() != "Darwin":
    return 0, f"native kernels are built for Linux and macOS only, not {platform.system()}"
  try:
    library = ctypes.cdll.LoadLibrary(str(build()))
  except (NativeBuildError, OSError) as e:
    return 0, str(e)
  jax.ffi.register_ffi_target(CONV_FORWARD_TARGET, jax.ffi.pycapsule(library.SslaxConvForward), platform="cpu")
  jax.ffi.register_ffi_target(CONV_WEIGHT_GRAD_TARGET, jax.ffi.pycapsule(library.SslaxConvWeightGrad), platform="cpu")
  return int(library.sslax_conv_lanes()), None


def load() -> str | None:
  """Makes the native kernels callable; returns None, or why they are unavailable here."""
  return _load()[1]


def vector_lanes() -> int:
  """The kernels' float32 vector width (output channels must be a multiple of it); 0 where unavailable."""
  return _load()[0]
