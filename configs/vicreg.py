r"""VICReg (Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance Regularization").

Presets (`--config=configs/vicreg.py:PRESET`):
  cifar10  CIFAR-10 recipe for accelerators. Loss weights (invariance 25, variance 25,
           covariance 1, target std 1) and the 3-layer BN-ReLU projector follow the paper; the
           CIFAR-10 hyper-parameters (ResNet-18 CIFAR stem, projector 2048-2048-2048, batch 256,
           LARS lr 0.3 x batch/256, weight decay 1e-4, 10 warm-up epochs, 1000 epochs) follow
           solo-learn's published CIFAR configs (da Costa et al. 2022, JMLR):
             python -m sslax.main --config=configs/vicreg.py:cifar10 --workdir=workdirs/vicreg_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD) with a
           512-512-512 projector: kNN top-1 0.583 after its 11 epochs (BENCHMARKS.md):
             python -m sslax.main --config=configs/vicreg.py:cpu --workdir=workdirs/vicreg_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, redundancy_reduction_sizes

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("vicreg", preset)
  c.vicreg.sim_weight = 25.0
  c.vicreg.var_weight = 25.0
  c.vicreg.cov_weight = 1.0
  redundancy_reduction_sizes(c, preset)
  return c.lock()
