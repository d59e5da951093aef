r"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction").

Presets (`--config=configs/barlow_twins.py:PRESET`):
  cifar10  CIFAR-10 recipe for accelerators. The loss (lambda = 5e-3, standardised global-batch
           cross-correlation) and the 3-layer BN-ReLU projector follow the paper; the CIFAR-10
           hyper-parameters (ResNet-18 CIFAR stem, projector 2048-2048-2048, batch 256, LARS
           lr 0.3 x batch/256, weight decay 1e-4, 10 warm-up epochs, 1000 epochs) follow
           solo-learn's published CIFAR configs (da Costa et al. 2022, JMLR); augmentations
           are SimCLR's CIFAR set:
             python -m sslax.main --config=configs/barlow_twins.py:cifar10 --workdir=workdirs/bt_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD) with a
           512-512-512 projector: kNN top-1 0.486 after 18.7 training minutes on 2 cores (BENCHMARKS.md):
             python -m sslax.main --config=configs/barlow_twins.py:cpu --workdir=workdirs/bt_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, redundancy_reduction_sizes

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("barlow_twins", preset)
  c.barlow_twins.lambd = 5e-3
  redundancy_reduction_sizes(c, preset)
  return c.lock()
