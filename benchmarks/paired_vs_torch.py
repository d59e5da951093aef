r"""sslax's SimCLR train step against PyTorch's, one step each in alternating pairs.

`speed_vs_torch.sh` times each framework in its own process, one after the other; on this
shared machine, whose speed drifts by 10-30% within minutes, the ratio of two such timings
scatters by about as much as the difference it is meant to show. This script keeps both
steps ready at once, sslax's compiled in this process and PyTorch's in a child process
(`benchmarks/torch_reference.py --serve`, optionally under another interpreter), and runs
them one step at a time in ABBA order, so each pair sees the machine at the same moment.
The idle side waits blocked on a pipe; a pause before every step lets its threads go to
sleep first. Reported: each side's median step time and the median of the per-pair ratio
PyTorch / sslax (above 1: sslax is faster), with its quartiles, and each side's median kernel
(system) CPU time per step.

  pip install -e ".[bench]"
  TFDS_DATA_DIR=../shared/tensorflow_datasets python benchmarks/paired_vs_torch.py \
      --config=configs/simclr.py:cpu --config.batch_size=256 --config.augment.crop_size=32 --pairs=30

The network size, batch and crop come from the config (model.width_multiplier, batch_size,
augment.crop_size, the projector's one hidden width); sslax runs with its CPU defaults
(sslax/host.py: one XLA device per core, tcmalloc where installed, else malloc on huge pages),
PyTorch channels_last with its own default malloc unless `--torch_hugepages` or `--torch_tcmalloc`
(`--nochannels_last` for NCHW).
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sslax import host  # noqa: E402
from sslax.config_utils import ConfigError  # noqa: E402
from sslax.data import load_dataset  # noqa: E402
from pairing import alternate, report, summary, timed_step  # noqa: E402 (benchmarks/pairing.py)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/simclr.py:cpu", "sslax's config (SimCLR).")
_TORCH_PYTHON = flags.DEFINE_string("torch_python", os.environ.get("TORCH_PYTHON", sys.executable),
                                    "Interpreter with PyTorch for the child process (default $TORCH_PYTHON).")
_CHANNELS_LAST = flags.DEFINE_bool("channels_last", True, "PyTorch in channels_last (else NCHW).")
_TORCH_HUGEPAGES = flags.DEFINE_bool("torch_hugepages", False,
                                     "Give PyTorch the same huge-page malloc tunable as sslax.")
_TORCH_TCMALLOC = flags.DEFINE_bool("torch_tcmalloc", False,
                                    "Preload the tcmalloc that sslax/host.py finds for PyTorch too.")
_PAIRS = flags.DEFINE_integer("pairs", 30, "Timed pairs of steps (after two warm-up steps of each).")
_PAUSE = flags.DEFINE_float("pause_s", 0.05, "Sleep before each step, so the idle side's threads sleep.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.")


def _torch_env(hugepages: bool, tcmalloc: bool) -> dict[str, str]:
  """This environment without the huge-page tunable and the tcmalloc preload that sslax/host.py
  added for itself (or with them, if `hugepages` / `tcmalloc`)."""
  env = dict(os.environ)
  tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and t != host.HUGEPAGE_TUNABLE]
  env["GLIBC_TUNABLES"] = ":".join(tunables + [host.HUGEPAGE_TUNABLE] * hugepages)
  library = host.find_tcmalloc()
  preload = [p for p in env.get("LD_PRELOAD", "").split() if p != library]
  if tcmalloc:
    if not library:
      raise ValueError("--torch_tcmalloc: no libtcmalloc found (Debian/Ubuntu: apt-get install libtcmalloc-minimal4).")
    preload.append(library)
  env["LD_PRELOAD"] = " ".join(preload)
  return env


class TorchStep:
  """PyTorch's step in a child process: `torch_reference.py --serve`, one step per call."""

  def __init__(self, python: str, args: list[str], hugepages: bool, tcmalloc: bool):
    """Starts `python torch_reference.py --serve *args` and waits until its step is built."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
    cmd = [python, script, "--serve", *args]
    self.kernel_s: list[float] = []  # Kernel (system) CPU seconds of each step.
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=_torch_env(hugepages, tcmalloc))
    if self.proc.stdout.readline().strip() != "ready":
      raise RuntimeError(f"{' '.join(cmd)} did not start (is PyTorch installed for {python}? "
                         "pip install -e '.[bench]' or pass --torch_python).")

  def __call__(self) -> float:
    self.proc.stdin.write("step\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError("torch_reference.py --serve exited; its error is above.")
    wall, kernel = map(float, line.split())
    self.kernel_s.append(kernel)
    return wall

  def close(self) -> None:
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def main(argv):
  del argv
  config = _CONFIG.value
  if config.method != "simclr":
    raise ConfigError(f"config.method={config.method!r}: torch_reference.py runs SimCLR's step only.")
  hidden = tuple(config.model.projector.hidden_dims)
  if len(hidden) != 1:
    raise ConfigError(f"config.model.projector.hidden_dims={hidden}: torch_reference.py builds one hidden layer.")
  host.reexec_with_fast_malloc(config)
  host.set_cpu_devices(config)
  data = load_dataset(config.data, config.data.train_split)
  sslax_run, sslax_kernel_s = timed_step(config, data), []

  def sslax_step() -> float:
    kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    seconds = sslax_run()
    sslax_kernel_s.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - kernel)
    return seconds

  torch_args = [f"--width={config.model.width_multiplier}", f"--batch={config.batch_size}",
                f"--crop={config.augment.crop_size}", f"--hidden={hidden[0]}"]
  torch_step = TorchStep(_TORCH_PYTHON.value, torch_args + ["--channels_last"] * _CHANNELS_LAST.value,
                         _TORCH_HUGEPAGES.value, _TORCH_TCMALLOC.value)
  try:
    times = alternate({"torch": torch_step, "sslax": sslax_step}, _PAIRS.value, pause_s=_PAUSE.value)
  finally:
    torch_step.close()
  result = {
      "width_multiplier": config.model.width_multiplier, "batch_size": config.batch_size,
      "crop_size": config.augment.crop_size, "devices": jax.device_count(), "pairs": _PAIRS.value,
      "torch_channels_last": _CHANNELS_LAST.value, "torch_hugepages": _TORCH_HUGEPAGES.value,
      "torch_tcmalloc": _TORCH_TCMALLOC.value, "sslax_ld_preload": os.environ.get("LD_PRELOAD", ""),
      **summary(times["torch"], times["sslax"], "torch", "sslax"),
      # Kernel CPU time per step (page faults of fresh buffers, futex waits), warm-up steps included.
      "torch_kernel_median_s": round(float(np.median(torch_step.kernel_s)), 4),
      "sslax_kernel_median_s": round(float(np.median(sslax_kernel_s)), 4),
      "torch_s": [round(t, 4) for t in times["torch"]], "sslax_s": [round(t, 4) for t in times["sslax"]],
  }
  report(result, _OUT.value)


if __name__ == "__main__":
  app.run(main)
