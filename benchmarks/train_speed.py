r"""Throughput, compile time and peak memory of one method's train step.

Measures, on the devices of this machine:
  * compile time of the jitted train step;
  * steady-state training images/s (an image = all its views, augmentation included);
  * the step's parts: the forward pass (augmentation, encoder on every view, loss), the
    forward and backward pass (the gradient the step applies) and the full step (plus
    the optimizer, monitors and method state), each jitted alone and timed;
  * augmentation-only images/s (the on-device view generation alone);
  * peak host memory (max RSS) and, on accelerators, peak device memory.

Run (the numbers in BENCHMARKS.md):
  python benchmarks/train_speed.py --config=configs/simclr.py:cpu --config.batch_size=256 \
      --config.augment.crop_size=32

Like `python -m sslax.main`, it restarts itself with malloc on huge pages and splits the CPU into
one XLA device per core (sslax/host.py); `--config.cpu_malloc=glibc --config.cpu_hugepages=False --config.cpu_devices=1`
times the step without either. `--config.model.conv_impl=xla` times XLA's own convolution gradients instead of the GEMM
ones that are the CPU default (sslax/models/conv.py); benchmarks/speed_vs_torch.sh runs
both beside PyTorch's step (benchmarks/torch_reference.py).
"""
from __future__ import annotations

import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sslax import augment, host, parallel, step  # noqa: E402
from sslax.data import load_dataset  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/simclr.py:cpu", "Config to benchmark.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.")


def _timed(fn, *args, repeats):
  out = fn(*args)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def main(argv):
  del argv
  config = _CONFIG.value
  # The CPU defaults of `python -m sslax.main` (sslax/host.py): huge pages, one device per core.
  host.reexec_with_fast_malloc(config)
  host.set_cpu_devices(config)
  data = load_dataset(config.data, config.data.train_split)
  setup = step.build_setup(config, len(data))
  batch_np = {"image": data.images[:config.batch_size]}
  if setup.method.needs_index:  # DeepCluster v2 reads each example's dataset index.
    batch_np["index"] = data.indices[:config.batch_size].astype(np.int32)
  batch = parallel.to_global_batch(batch_np, setup.mesh)
  state = step.create_train_state(setup, jax.random.PRNGKey(0))

  start = time.perf_counter()
  step_fn = step.make_train_step(setup).lower(state, batch).compile()
  compile_s = time.perf_counter() - start

  forward_s = _timed(step.make_loss_fn(setup), state, batch, repeats=_STEPS.value)
  forward_backward_s = _timed(step.make_grad_fn(setup), state, batch, repeats=_STEPS.value)

  state, metrics = step_fn(state, batch)  # Warm-up.
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / _STEPS.value

  def views(images, step):
    keys = augment.example_keys(config.seed, step, jnp.arange(images.shape[0]))
    return augment.multicrop_views(images, keys, config.augment, num_global=setup.method.num_views)

  aug_fn = jax.jit(views)
  aug_s = _timed(aug_fn, batch["image"], jnp.int32(0), repeats=_STEPS.value)

  peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  device_peak = None
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    device_peak = stats["peak_bytes_in_use"] / 2**30
  result = {
      "method": config.method, "backbone": config.model.backbone, "width_multiplier": config.model.width_multiplier,
      "batch_size": config.batch_size, "crop_size": config.augment.crop_size, "devices": jax.device_count(),
      "platform": jax.devices()[0].platform, "conv_impl": config.model.get("conv_impl", "auto"),
      "dtype": config.model.dtype, "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
      "ld_preload": os.environ.get("LD_PRELOAD", ""),
      "compile_s": round(compile_s, 2), "forward_s": round(forward_s, 4),
      "forward_backward_s": round(forward_backward_s, 4), "step_s": round(step_s, 4), "train_images_per_s": round(config.batch_size / step_s, 1),
      "augment_images_per_s": round(config.batch_size / aug_s, 1), "peak_host_rss_gib": round(peak_rss_gib, 2),
      "peak_device_gib": None if device_peak is None else round(device_peak, 2),
      "final_loss": float(metrics["loss"]),
  }
  print(json.dumps(result, indent=2))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
