r"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

Presets (`--config=configs/byol.py:PRESET`):
  cifar10  solo-learn's CIFAR-10 recipe (da Costa et al. 2022, JMLR, scripts/pretrain/cifar/byol.yaml):
           ResNet-18 CIFAR stem, projector 4096-256 and predictor 4096-256 (BN-ReLU hidden
           layers), target momentum 0.99 -> 1 (cosine), LARS lr 1.0 x batch/256 (eta 0.02),
           weight decay 1e-5, batch 256, 10 warm-up epochs, 1000 epochs:
             python -m sslax.main --config=configs/byol.py:cifar10 --workdir=workdirs/byol_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD,
           11 epochs) with 512-128 projector and predictor (BENCHMARKS.md):
             python -m sslax.main --config=configs/byol.py:cpu --workdir=workdirs/byol_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, preset_width, solo_learn_cifar

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("byol", preset)
  width = preset_width(preset, 4096)
  out = preset_width(preset, 256, cpu=128, tiny=16)
  c.model.projector = mlp_head((width,), out)
  c.model.predictor = mlp_head((width,), out)
  c.byol.base_momentum = 0.99
  if preset == "cifar10":
    solo_learn_cifar(c, optimizer="lars", learning_rate=1.0, weight_decay=1e-5)
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 1.0
  return c.lock()
