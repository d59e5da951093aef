"""Host settings that must be made before JAX starts its backends (CPU runs).

Measured wins for training on a CPU (BENCHMARKS.md, "CPU step speed against PyTorch"):

* **One XLA device per core** (`config.cpu_devices`). XLA-CPU runs its element-wise and
  reduction fusions (BatchNorm, ReLU, residual adds, window copies: about half of a
  ResNet step) on one thread per device; split into as many devices as cores, the data-
  parallel step (the same shard_map code and the same cross-device sums as on TPU pods)
  runs them on every core at once. The results equal one device's up to float rounding
  (tests/test_method_contract.py compares 8 devices with 1 for every method).
* **A malloc that keeps freed memory** (`config.cpu_malloc`). XLA-CPU allocates each
  step's temporary buffer afresh (about 0.5 GB per device for a ResNet-18 x0.25 SimCLR step
  at batch 256). Glibc's thread arenas grow in heaps of at most 64 MiB, so every larger block
  is a fresh `mmap` and each step faults its pages in again: about 0.1 s of kernel time per
  step on 2 cores even on huge pages. gperftools' tcmalloc keeps freed blocks for reuse;
  `'auto'` (the default) preloads it (`LD_PRELOAD`, through a restart) where the system has
  it (Debian/Ubuntu: `apt-get install libtcmalloc-minimal4`; conda: `gperftools`). The
  kernel time goes, and the SimCLR step on 2 cores was 0-5% faster (about 2%; medians over
  runs that alternated the two). Where tcmalloc is absent, glibc's malloc stays, with:
* **Transparent huge pages for glibc's malloc** (`config.cpu_hugepages`). With 4 KiB pages,
  touching fresh buffers costs millions of page faults per minute. Glibc's
  `glibc.malloc.hugetlb=1` tunable makes malloc ask the kernel for 2 MiB pages (madvise),
  which cuts page faults about 9x. Glibc reads tunables only at start-up, so
  `reexec_with_fast_malloc` restarts the process with it set.

Each is skipped where the user already chose (an explicit XLA_FLAGS device count, an
explicit `jax_num_cpu_devices`, an allocator already in LD_PRELOAD, a GLIBC_TUNABLES that
sets hugetlb). The device split only concerns JAX's CPU backend, so it changes nothing on
GPU or TPU hosts; the allocator restart applies there too, to host-side allocations only
(Cloud TPU VM images preload tcmalloc themselves).
"""
from __future__ import annotations

import ctypes.util
import glob
import os
import platform
import sys
from typing import Any

from absl import logging

HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
MALLOC_CHOICES = ("auto", "tcmalloc", "glibc")
# Allocators a user may have preloaded already; sslax then leaves LD_PRELOAD alone.
_PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")
# gperftools' tcmalloc, the minimal build (no heap profiler) first; newest soname first.
_TCMALLOC_PATTERNS = ("libtcmalloc_minimal.so*", "libtcmalloc.so*")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# gperftools logs every allocation above this (default 1 GiB) to stderr; XLA's buffers pass it.
_TCMALLOC_QUIET = ("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
# glibc's hugetlb tunable appeared in 2.35; older versions would ignore it, so no restart there.
_MIN_GLIBC = (2, 35)
# More devices than this has never been measured (2 cores here, 8 devices in the tests).
MAX_AUTO_CPU_DEVICES = 8


def add_config_fields(c: Any) -> None:
  """Adds this module's fields to a run config (training presets and configs/eval.py).

  Args:
    c: the ConfigDict to extend (unlocked).
  """
  # XLA devices to split a CPU into, 0 = one per core (up to MAX_AUTO_CPU_DEVICES, a divisor of
  # batch_size); tcmalloc where the system has it ('auto'; 'tcmalloc' requires it, 'glibc'
  # never preloads), else glibc's malloc on transparent huge pages, both through a restart.
  # All measured faster.
  c.cpu_devices = 0
  c.cpu_malloc = "auto"
  c.cpu_hugepages = True


def _glibc_version() -> tuple[int, ...] | None:
  libc, version = platform.libc_ver()
  if libc != "glibc" or not version:
    return None
  try:
    return tuple(int(part) for part in version.split(".")[:2])
  except ValueError:
    return None


def hugepages_wanted(config: Any, environ: dict[str, str] | None = None) -> bool:
  """Whether this process should be restarted with huge pages for malloc.

  Args:
    config: the run config (`cpu_hugepages`, default True).
    environ: the environment (default os.environ).

  Returns:
    True on Linux with glibc >= 2.35 when `config.cpu_hugepages` is on and GLIBC_TUNABLES
    does not already set `glibc.malloc.hugetlb`.
  """
  environ = os.environ if environ is None else environ
  if not config.get("cpu_hugepages", True) or sys.platform != "linux":
    return False
  version = _glibc_version()
  if version is None or version < _MIN_GLIBC:
    return False
  return "glibc.malloc.hugetlb" not in environ.get("GLIBC_TUNABLES", "")


def find_tcmalloc(lib_dirs: tuple[str, ...] | None = None) -> str | None:
  """The path of gperftools' tcmalloc shared library on this system, if any.

  Args:
    lib_dirs: directories to look in (default: this Python's prefix/lib, for conda's
      gperftools, then the usual system library directories).

  Returns:
    A path (or, from the linker's cache, a soname that LD_PRELOAD resolves), or None.
  """
  dirs = lib_dirs if lib_dirs is not None else (os.path.join(sys.prefix, "lib"),) + _LIB_DIRS
  for pattern in _TCMALLOC_PATTERNS:
    for directory in dirs:
      found = glob.glob(os.path.join(directory, pattern))
      # The soname (libtcmalloc_minimal.so.4) where present, not the bare .so of a dev package.
      versioned = [path for path in found if ".so." in os.path.basename(path)]
      if found:
        return min(versioned or found, key=len)
  if lib_dirs is None:
    for name in ("tcmalloc_minimal", "tcmalloc"):
      soname = ctypes.util.find_library(name)
      if soname:
        return soname
  return None


def malloc_environment(config: Any, environ: dict[str, str] | None = None,
                       tcmalloc: str | None | bool = True) -> dict[str, str]:
  """The environment variables to restart this process with for `config.cpu_malloc`.

  Args:
    config: the run config (`cpu_malloc`, default 'auto'; `cpu_hugepages`, default True).
    environ: the environment (default os.environ).
    tcmalloc: the tcmalloc library to preload (True: `find_tcmalloc()`; None: absent).

  Returns:
    The variables to set (empty: nothing to change, no restart): LD_PRELOAD with tcmalloc
    where it is wanted and found and no allocator is preloaded yet; otherwise GLIBC_TUNABLES
    with hugetlb where `hugepages_wanted` says so.

  Raises:
    ValueError: an unknown `cpu_malloc`, or 'tcmalloc' where the library is absent.
  """
  environ = os.environ if environ is None else environ
  choice = config.get("cpu_malloc", "auto")
  if choice not in MALLOC_CHOICES:
    raise ValueError(f"Unknown config.cpu_malloc={choice!r}; valid choices: {', '.join(MALLOC_CHOICES)}.")
  preload = environ.get("LD_PRELOAD", "")
  if any(name in preload for name in _PRELOADED_ALLOCATORS):
    return {}  # The user's allocator (or ours, after the restart) is in place.
  if choice != "glibc" and sys.platform == "linux":
    library = find_tcmalloc() if tcmalloc is True else tcmalloc
    if library:
      env = {"LD_PRELOAD": " ".join(filter(None, [preload, library]))}
      if _TCMALLOC_QUIET[0] not in environ:
        env[_TCMALLOC_QUIET[0]] = _TCMALLOC_QUIET[1]
      return env
    if choice == "tcmalloc":
      raise ValueError("config.cpu_malloc='tcmalloc' but no libtcmalloc was found (looked in "
                       f"{os.path.join(sys.prefix, 'lib')}, {', '.join(_LIB_DIRS)} and the linker cache). Install it "
                       "(Debian/Ubuntu: apt-get install libtcmalloc-minimal4; conda: gperftools), or set "
                       "--config.cpu_malloc=auto (glibc's malloc where tcmalloc is absent).")
  if hugepages_wanted(config, environ):
    return {"GLIBC_TUNABLES": ":".join(filter(None, [environ.get("GLIBC_TUNABLES", ""), HUGEPAGE_TUNABLE]))}
  return {}


def reexec_with_fast_malloc(config: Any) -> None:
  """Restarts this process (same interpreter and arguments) with the malloc `malloc_environment` picks.

  Call it first thing in a command-line entry point, before JAX or TensorFlow start
  threads or allocate; it returns without doing anything where nothing is to change.

  Args:
    config: the run config (`cpu_malloc`, `cpu_hugepages`).
  """
  changes = malloc_environment(config)
  if not changes:
    return
  logging.info("Restarting with %s (config.cpu_malloc=glibc and config.cpu_hugepages=False turn this off).",
               " ".join(f"{k}={v}" for k, v in changes.items()))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(sys.orig_argv), dict(os.environ, **changes))


def _user_chose_cpu_devices() -> bool:
  import jax

  return ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
          or jax.config.jax_num_cpu_devices >= 0)


def available_cores() -> int:
  """CPU cores this process may run on: its affinity mask where the OS has one (Linux), else every core."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_cpu_devices(config: Any, cores: int | None = None) -> int:
  """The number of CPU devices `config.cpu_devices=0` (auto) picks.

  Args:
    config: the run config (`batch_size` where it has one).
    cores: CPU cores this process may run on (default: its affinity mask).

  Returns:
    The largest count up to min(cores, MAX_AUTO_CPU_DEVICES) that divides the global batch.
  """
  if cores is None:
    cores = available_cores()
  batch_size = config.get("batch_size") or 0
  for count in range(max(1, min(cores, MAX_AUTO_CPU_DEVICES)), 1, -1):
    if not batch_size or batch_size % count == 0:
      return count
  return 1


def set_cpu_devices(config: Any, distributed: bool = False) -> int | None:
  """Splits this host's CPU into `config.cpu_devices` XLA devices (0 = one per core).

  Must run before JAX initialises its backends (the first `jax.devices()`).

  Args:
    config: the run config (`cpu_devices`, default 0 = auto; `batch_size`).
    distributed: whether this is one of several processes; auto then keeps one device
      per process, because the processes of one host share its cores.

  Returns:
    The count set, or None where the user chose one already or auto picked 1.
  """
  import jax

  requested = int(config.get("cpu_devices", 0) or 0)
  if requested < 0:
    raise ValueError(f"config.cpu_devices={requested} must be >= 0 (0 = one XLA device per CPU core).")
  if _user_chose_cpu_devices():
    if requested:
      logging.info("config.cpu_devices=%d ignored: XLA_FLAGS or jax_num_cpu_devices already sets the count.",
                   requested)
    return None
  count = requested or (1 if distributed else auto_cpu_devices(config))
  if count == 1 and not requested:
    return None
  jax.config.update("jax_num_cpu_devices", count)
  return count
