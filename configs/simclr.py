r"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Presets (`--config=configs/simclr.py:PRESET`):
  cpu      (default) ResNet-18 (CIFAR stem, width x0.25), batch 128, 20x20 crops, SGD,
           temperature 0.2, 11 epochs: about 20 minutes of training on a 2-core CPU (kNN
           top-1 in BENCHMARKS.md):
             python -m sslax.main --config=configs/simclr.py:cpu --workdir=workdirs/simclr_cpu
  cifar10  The published CIFAR-10 recipe for accelerators (SimCLR appendix B.9): ResNet-18 with the
           CIFAR stem, batch 512, LARS (lr 1.0 x batch/256, weight decay 1e-6, 10 warm-up epochs,
           cosine decay), temperature 0.5, colour-jitter strength 0.5, no blur, 800 epochs:
             python -m sslax.main --config=configs/simclr.py:cifar10 --workdir=workdirs/simclr_cifar10
  tiny     A few steps of a tiny model, for tests:
             python -m sslax.main --config=configs/simclr.py:tiny --workdir=/tmp/simclr_tiny

Any field can be overridden: --config.batch_size=256 --config.optimizer.name=sgd ...
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("simclr", preset)
  c.simclr.temperature = 0.5
  if preset == "cpu":
    c.simclr.temperature = 0.2  # Better than 0.5 in 3-minute runs (BENCHMARKS.md).
  return c.lock()
