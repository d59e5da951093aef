r"""MoCo v2 (Chen, Fan, Girshick & He 2020, "Improved Baselines with Momentum Contrastive Learning").

Presets (`--config=configs/moco_v2.py:PRESET`):
  cifar10  solo-learn's CIFAR-10 "MoCo v2+" recipe (da Costa et al. 2022, JMLR,
           scripts/pretrain/cifar/mocov2plus.yaml): ResNet-18 CIFAR stem, 2048-256 MLP head
           (no BN), queue 32768, temperature 0.2, symmetric loss, key-encoder momentum
           0.99 -> 0.999 (cosine), SGD lr 0.3 x batch/256, weight decay 1e-4, batch 256, 1000 epochs:
             python -m sslax.main --config=configs/moco_v2.py:cifar10 --workdir=workdirs/moco_v2_cifar10
           The original MoCo v2 is asymmetric with a constant 0.999 momentum:
           --config.moco_v2.symmetric=False --config.moco_v2.base_momentum=0.999.
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD,
           11 epochs) with a 512-128 head and a queue of 4096 (BENCHMARKS.md):
             python -m sslax.main --config=configs/moco_v2.py:cpu --workdir=workdirs/moco_v2_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, preset_width, solo_learn_cifar

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("moco_v2", preset)
  c.model.projector = mlp_head((preset_width(preset, 2048),), preset_width(preset, 256, cpu=128, tiny=16),
                               use_bn=False)
  c.moco_v2.temperature = 0.2
  c.moco_v2.queue_size = {"cifar10": 32768, "cpu": 4096, "tiny": 64}[preset]
  c.moco_v2.symmetric = True
  c.moco_v2.base_momentum = 0.99
  c.moco_v2.final_momentum = 0.999
  if preset == "cifar10":
    solo_learn_cifar(c, optimizer="sgd", learning_rate=0.3, weight_decay=1e-4)
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 0.6
  return c.lock()
