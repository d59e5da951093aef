"""Upper bound on what a faster BatchNorm backward could save on CPU (issue 13).

Times the gradient of ResNet-18 x0.25 (CIFAR stem, GEMM convolution gradients) at batch 512
of 32x32 inputs twice per round: with Flax's BatchNorm, and with BatchNorm replaced by a
per-channel affine (no statistics, so nothing of BatchNorm's reductions in either pass).
The difference bounds what a fused BatchNorm backward (a custom VJP) could gain.

  python benchmarks/batchnorm_bound.py
"""
import time
import flax.linen as nn
import jax, jax.numpy as jnp
import numpy as np


class Affine(nn.Module):
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: str | None = None
  scale_init: object = nn.initializers.ones
  dtype: object = None

  @nn.compact
  def __call__(self, x):
    s = self.param("scale", self.scale_init, (x.shape[-1],))
    b = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return x * s + b


from sslax.models import conv as sconv, resnet  # noqa: E402
real_bn = nn.BatchNorm
res = {}
for rnd in range(2):
  for mode in ("bn", "affine"):
    resnet.nn.BatchNorm = real_bn if mode == "bn" else Affine
    model = resnet.ResNet((2, 2, 2, 2), resnet.BasicBlock, width_multiplier=0.25,
                          conv_general_dilated=sconv.conv_general_dilated)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(512, 32, 32, 3)).astype(np.float32))
    v = model.init(jax.random.key(0), x[:2])
    def loss(p, bs):
      out, _ = model.apply({"params": p, **bs}, x, mutable=["batch_stats"])
      return jnp.sum(out ** 2)
    g = jax.jit(jax.grad(loss))
    bs = {k: vv for k, vv in v.items() if k != "params"}
    jax.block_until_ready(g(v["params"], bs))
    t = time.perf_counter()
    for _ in range(5):
      out = g(v["params"], bs)
    jax.block_until_ready(out)
    res.setdefault(mode, []).append((time.perf_counter() - t) / 5)
    print(rnd, mode, res[mode][-1], flush=True)
resnet.nn.BatchNorm = real_bn
