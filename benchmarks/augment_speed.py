r"""Time of SimCLR's on-device augmentation and of its colour jitter alone, jitted, on this machine.

Times, for one device's share of a batch (--batch images of 32x32, two views):
  * the whole view generation (crop and resize, flip, colour jitter, grayscale);
  * the same without colour jitter;
  * the colour jitter alone (one view's images);
  * an RGB -> HSV -> RGB round trip (the core of the hue rotation).
Pin it to one core to see one XLA device's cost (`python -m sslax.main` runs one device per core):

  taskset -c 0 python benchmarks/augment_speed.py
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from sslax import augment
from sslax.augment import views


def _best_ms(fn, *args, repeats: int = 20, rounds: int = 3) -> float:
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(repeats):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / repeats * 1e3)
  return round(best, 2)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128, help="Images (each gets two views).")
  args = parser.parse_args()
  cfg = augment.default_simclr_augment_config()
  no_jitter = augment.default_simclr_augment_config()
  no_jitter.color_jitter_prob = 0.0
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8))
  keys = augment.example_keys(0, 0, jnp.arange(args.batch))
  floats = jax.random.uniform(jax.random.PRNGKey(0), (args.batch, 32, 32, 3))
  result = {
      "batch": args.batch,
      "two_views_ms": _best_ms(lambda im, k: views.simclr_views(im, k, cfg, 2), images, keys),
      "two_views_without_jitter_ms": _best_ms(lambda im, k: views.simclr_views(im, k, no_jitter, 2), images, keys),
      "color_jitter_one_view_ms": _best_ms(
          lambda x, k: jax.vmap(lambda xi, ki: views.color_jitter(xi, ki, cfg))(x, k), floats, keys),
      "hsv_round_trip_ms": _best_ms(lambda x: views._hsv_to_rgb(*views._rgb_to_hsv(x)), floats),
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
