r"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

Presets (`--config=configs/simsiam.py:PRESET`):
  cifar10  solo-learn's CIFAR-10 recipe (da Costa et al. 2022, JMLR, scripts/pretrain/cifar/simsiam.yaml):
           ResNet-18 CIFAR stem, projector 2048-2048-2048 with BN on the output, predictor
           512-2048, SGD lr 0.5 x batch/256, weight decay 1e-5, batch 256, 1000 epochs; the
           predictor at a fixed learning rate as in the paper (section 4.4):
             python -m sslax.main --config=configs/simsiam.py:cifar10 --workdir=workdirs/simsiam_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD,
           11 epochs) with a 512-512-512 projector and a 128-512 predictor (BENCHMARKS.md):
             python -m sslax.main --config=configs/simsiam.py:cpu --workdir=workdirs/simsiam_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, preset_width, solo_learn_cifar

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("simsiam", preset)
  width = preset_width(preset, 2048)
  c.model.projector = mlp_head((width, width), width, last_bn=True)
  c.model.predictor = mlp_head((preset_width(preset, 512, cpu=128, tiny=8),), width)
  c.optimizer.fixed_lr_modules = ("predictor",)
  if preset == "cifar10":
    solo_learn_cifar(c, optimizer="sgd", learning_rate=0.5, weight_decay=1e-5)
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 0.3
  return c.lock()
