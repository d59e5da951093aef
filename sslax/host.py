"""Host settings that must be made before JAX starts its backends (CPU runs).

Two measured wins for training on a CPU (BENCHMARKS.md, "CPU step speed against PyTorch"):

* **One XLA device per core** (`config.cpu_devices`). XLA-CPU runs its element-wise and
  reduction fusions (BatchNorm, ReLU, residual adds, window copies: about half of a
  ResNet step) on one thread per device; split into as many devices as cores, the data-
  parallel step (the same shard_map code and the same cross-device sums as on TPU pods)
  runs them on every core at once. The results equal one device's up to float rounding
  (tests/test_method_contract.py compares 8 devices with 1 for every method).
* **Transparent huge pages for malloc** (`config.cpu_hugepages`). XLA allocates fresh
  buffers of tens of MB every step; with 4 KiB pages, touching them costs millions of
  page faults per minute. glibc's `glibc.malloc.hugetlb=1` tunable makes malloc ask the
  kernel for 2 MiB pages (madvise), which cuts page faults about 9x. glibc reads tunables
  only at start-up, so `reexec_with_hugepages` restarts the process with it set.

Both are skipped where the user already chose (an explicit XLA_FLAGS device count, an
explicit `jax_num_cpu_devices`, a GLIBC_TUNABLES that sets hugetlb). The device split only
concerns JAX's CPU backend, so it changes nothing on GPU or TPU hosts; the huge-page restart
applies there too, to host-side allocations only.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any

from absl import logging

HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
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
  # batch_size); malloc on transparent huge pages through a restart. Both measured faster.
  c.cpu_devices = 0
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


def reexec_with_hugepages(config: Any) -> None:
  """Restarts this process (same interpreter and arguments) with malloc on huge pages.

  Call it first thing in a command-line entry point, before JAX or TensorFlow start
  threads or allocate; it returns without doing anything where `hugepages_wanted` says no.

  Args:
    config: the run config (`cpu_hugepages`).
  """
  if not hugepages_wanted(config):
    return
  env = dict(os.environ)
  env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES", ""), HUGEPAGE_TUNABLE]))
  logging.info("Restarting with GLIBC_TUNABLES=%s (config.cpu_hugepages=False turns this off).",
               env["GLIBC_TUNABLES"])
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(sys.orig_argv), env)


def _user_chose_cpu_devices() -> bool:
  import jax

  return ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
          or jax.config.jax_num_cpu_devices >= 0)


def auto_cpu_devices(config: Any, cores: int | None = None) -> int:
  """The number of CPU devices `config.cpu_devices=0` (auto) picks.

  Args:
    config: the run config (`batch_size` where it has one).
    cores: CPU cores this process may run on (default: its affinity mask).

  Returns:
    The largest count up to min(cores, MAX_AUTO_CPU_DEVICES) that divides the global batch.
  """
  if cores is None:  # The affinity mask where the OS has one (Linux), else every core.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
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
