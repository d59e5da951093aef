r"""BatchNorm + ReLU, forward and backward, alone: sslax's two-pass backward against Flax's.

Times `jax.grad` of sum(relu(BatchNorm(x)) * cotangent) with respect to x, scale and bias,
jitted, for `flax.linen.BatchNorm` and `sslax.models.norm.BatchNorm` (the CPU default,
`model.bn_impl`), at the activation shapes of a ResNet-18 x0.25 on 32x32 crops with 256
images per device, alternating the two in every repeat so that both see the machine at
the same moment. Also checks that the two agree.

  python benchmarks/batchnorm_speed.py [--repeats=20] [--out=FILE]

Run it pinned to one core (`taskset -c 0`) for the per-device cost of the train step's
two-device CPU split.
"""
from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from sslax.models import norm  # noqa: E402

_SHAPES = flags.DEFINE_list("shapes", ["256x32x32x16", "256x16x16x32", "256x8x8x64", "256x4x4x128"],
                            "Activation shapes NxHxWxC.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls of each (alternating).")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the results.")


def _grad_fn(module_cls):
  module = module_cls(use_running_average=False, momentum=0.9, epsilon=1e-5)

  def loss(x, scale, bias, cotangent):
    variables = {"params": {"scale": scale, "bias": bias},
                 "batch_stats": {"mean": jnp.zeros_like(scale), "var": jnp.ones_like(scale)}}
    y, _ = module.apply(variables, x, mutable=["batch_stats"])
    return jnp.sum(nn.relu(y) * cotangent)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _call_s(fn, args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  fns = {"flax": _grad_fn(nn.BatchNorm), "sslax": _grad_fn(norm.BatchNorm)}
  results = []
  for text in _SHAPES.value:
    shape = tuple(int(d) for d in text.split("x"))
    x = jnp.asarray(rng.normal(size=shape) * 2.0 + 0.5, jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32)
    bias = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
    args = (x, scale, bias, cotangent)
    grads = {name: jax.block_until_ready(fn(*args)) for name, fn in fns.items()}  # Compiles both.
    worst = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))
                for a, b in zip(grads["sslax"], grads["flax"]))
    times = {name: [] for name in fns}
    for i in range(_REPEATS.value):
      for name in (("flax", "sslax") if i % 2 == 0 else ("sslax", "flax")):
        times[name].append(_call_s(fns[name], args))
    row = {"shape": text, "flax_ms": round(1e3 * float(np.median(times["flax"])), 2),
           "sslax_ms": round(1e3 * float(np.median(times["sslax"])), 2),
           "max_relative_gradient_difference": worst}
    row["speedup"] = round(row["flax_ms"] / row["sslax_ms"], 2)
    print(json.dumps(row), flush=True)
    results.append(row)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
