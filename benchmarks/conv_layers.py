r"""Per-layer convolution times: forward, input gradient and weight gradient, XLA's against sslax's.

Times each distinct convolution of a ResNet-18 with the CIFAR stem (width 64 x --width) at
--batch images of --size x --size (default 32x32) alone, jitted, on this machine's default backend, for
`lax.conv_general_dilated` with JAX's own gradients ("xla"), for
`sslax.models.conv.conv_general_dilated` ("gemm": GEMM gradients) and for
`sslax.models.conv.native_conv_general_dilated` ("native": sslax/native's C++ kernels, the CPU
default where they build), and checks that all give XLA's gradients. This is how the slow weight
gradient of XLA-CPU was found (BENCHMARKS.md, "CPU step speed against PyTorch"). For one core's
times, as one XLA device per core sees them:

  XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c 0 \
      python benchmarks/conv_layers.py --width=0.25 --batch=256
  python benchmarks/conv_layers.py --width=0.25 --batch=640 --size=16   # counting's 5 x 128 inputs
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sslax import native
from sslax.models.conv import conv_general_dilated as gemm_conv
from sslax.models.conv import native_conv_general_dilated as native_conv

_DN = ("NHWC", "HWIO", "NHWC")


def resnet18_cifar_convs(width: int, size: int = 32) -> list[tuple[int, int, int, int, int]]:
  """(input side, in channels, out channels, kernel, stride) of each distinct conv on size x size inputs."""
  w, s1 = width, size
  s2 = -(-s1 // 2)  # SAME padding with stride 2 rounds up.
  s3 = -(-s2 // 2)
  s4 = -(-s3 // 2)
  return [(s1, 3, w, 3, 1), (s1, w, w, 3, 1), (s1, w, 2 * w, 3, 2), (s1, w, 2 * w, 1, 2), (s2, 2 * w, 2 * w, 3, 1),
          (s2, 2 * w, 4 * w, 3, 2), (s2, 2 * w, 4 * w, 1, 2), (s3, 4 * w, 4 * w, 3, 1), (s3, 4 * w, 8 * w, 3, 2),
          (s3, 4 * w, 8 * w, 1, 2), (s4, 8 * w, 8 * w, 3, 1)]


def _timed_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier.")
  parser.add_argument("--batch", type=int, default=512, help="Images per call (a SimCLR batch of 256 has 512 views).")
  parser.add_argument("--size", type=int, default=32,
                      help="Input side (16: the 16-px pretext presets; 9: jigsaw's and relative patch's tiles).")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--impls", default="xla,gemm,native", help="Comma-separated: xla, gemm, native.")
  args = parser.parse_args()
  convs = {"xla": lax.conv_general_dilated, "gemm": gemm_conv, "native": native_conv}
  impls = args.impls.split(",")
  if "native" in impls and native.load() is not None:
    print(json.dumps({"skipped": "native", "reason": native.load()}), flush=True)
    impls.remove("native")
  rng = np.random.default_rng(0)
  totals, rows = {}, []
  for side, cin, cout, k, s in resnet18_cifar_convs(max(1, round(64 * args.width)), args.size):
    x = jnp.asarray(rng.normal(size=(args.batch, side, side, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
    y = lax.conv_general_dilated(x, w, (s, s), "SAME", dimension_numbers=_DN)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    row = {"layer": f"{side}x{side}x{cin}->{cout} k{k} s{s}"}
    grads = {}
    for name, conv in ((name, convs[name]) for name in impls):
      fwd = jax.jit(lambda x, w, conv=conv: conv(x, w, (s, s), "SAME", dimension_numbers=_DN))
      vjp = lambda x, w, g, conv=conv: jax.vjp(  # noqa: E731
          lambda x, w: conv(x, w, (s, s), "SAME", dimension_numbers=_DN), x, w)[1](g)
      dx = jax.jit(lambda x, w, g, vjp=vjp: vjp(x, w, g)[0])
      dw = jax.jit(lambda x, w, g, vjp=vjp: vjp(x, w, g)[1])
      grads[name] = jax.jit(vjp)(x, w, g)
      for part, ms in (("forward", _timed_ms(fwd, x, w, repeats=args.repeats)),
                       ("input_grad", _timed_ms(dx, x, w, g, repeats=args.repeats)),
                       ("weight_grad", _timed_ms(dw, x, w, g, repeats=args.repeats))):
        row[f"{name}_{part}_ms"] = round(ms, 1)
        totals[f"{name}_{part}_ms"] = round(totals.get(f"{name}_{part}_ms", 0.0) + ms, 1)
    for name in impls[1:]:  # Against the first (XLA's by default).
      for a, b in zip(grads[impls[0]], grads[name]):
        row[f"{name}_max_rel_diff"] = max(row.get(f"{name}_max_rel_diff", 0.0),
                                          float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a))))
    rows.append(row)
    print(json.dumps(row), flush=True)
  print(json.dumps({"totals_over_distinct_layers": totals, "batch": args.batch, "width": args.width,
                    "size": args.size}))


if __name__ == "__main__":
  main()
