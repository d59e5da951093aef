"""Upper bound on what a faster BatchNorm backward could save on CPU (issue 13).

Times the gradient of ResNet-18 x0.25 (CIFAR stem, GEMM convolution gradients) at batch 512
of 32x32 inputs twice per round: with Flax's BatchNorm, and with BatchNorm replaced by a
per-channel affine (no statistics, so nothing of BatchNorm's reductions in either pass).
The difference bounds what a fused BatchNorm backward (a custom VJP) could gain.

  python benchmarks/batchnorm_bound.py
"""
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sslax.models import conv, resnet


class Affine(nn.Module):
  """A per-channel scale and bias with BatchNorm's constructor arguments (the rest ignored)."""

  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: str | None = None
  scale_init: object = nn.initializers.ones
  dtype: object = None

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", self.scale_init, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return x * scale + bias


def gradient_seconds(norm, x, repeats: int = 5) -> float:
  """Mean seconds of one jitted gradient of the ResNet built with `norm` for BatchNorm."""
  batch_norm = resnet.nn.BatchNorm
  resnet.nn.BatchNorm = norm  # ResNet builds its norm layers from this name at call time.
  try:
    model = resnet.ResNet((2, 2, 2, 2), resnet.BasicBlock, width_multiplier=0.25,
                          conv_general_dilated=conv.conv_general_dilated)
    variables = model.init(jax.random.key(0), x[:2])
    params, stats = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p, **stats}, x,
                                                           mutable=["batch_stats"])[0] ** 2)))
    jax.block_until_ready(grad(params))
    start = time.perf_counter()
    for _ in range(repeats):
      out = grad(params)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats
  finally:
    resnet.nn.BatchNorm = batch_norm


def main():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(512, 32, 32, 3)).astype(np.float32))
  for rnd in range(2):
    for name, norm in (("bn", nn.BatchNorm), ("affine", Affine)):
      print(rnd, name, gradient_seconds(norm, x), flush=True)


if __name__ == "__main__":
  main()
