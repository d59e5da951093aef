r"""Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles", ECCV).

Presets (`--config=configs/jigsaw.py:PRESET`):
  cifar10  The paper's recipe scaled to CIFAR-10: 3x3 tiles with random gaps (32x32 crops,
           10-pixel cells, 9-pixel tiles; the paper: 225/75/64 on ImageNet), each tile
           normalised on its own, colour channels jittered by up to 1 pixel (the paper: 2 at
           64 pixels), 30% grayscale, 100 permutations of maximal Hamming distance, a shared
           tile encoder with a per-tile head (fc6, 1024) and a classifier over the
           concatenated tiles (fc7 4096, fc8 100); batch 256, SGD momentum 0.9, weight decay
           5e-4. Differences: a ResNet-18 (CIFAR stem) with BatchNorm instead of the
           paper's AlexNet, so lr 0.1 with a cosine decay instead of 0.01 with steps, and 100
           epochs:
             python -m sslax.main --config=configs/jigsaw.py:cifar10 --workdir=workdirs/jigsaw_cifar10
  cpu      (default) ResNet-18 x0.25, batch 128 (1152 tiles a step), 11 epochs, 1000
           permutations (the largest set sslax builds; Goyal et al. 2019, "Scaling and
           Benchmarking Self-Supervised Visual Representation Learning", find jigsaw features
           improve with the set's size; in 20 minutes on 2 cores +9.3 / +9.5 kNN / linear over
           the random init on the 3x3 grid, BENCHMARKS.md):
             python -m sslax.main --config=configs/jigsaw.py:cpu --workdir=workdirs/jigsaw_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, tile_pretext

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("jigsaw", preset)
  if preset == "cpu":
    c.jigsaw.num_permutations = 1000
  tile_pretext(c, preset, num_classes=c.jigsaw.num_permutations)
  c.augment.grayscale_prob = 0.3  # The paper's defence against colour-based shortcuts.
  return c.lock()
