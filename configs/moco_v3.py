r"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

Presets (`--config=configs/moco_v3.py:PRESET`):
  cifar10  solo-learn's CIFAR-10 recipe (da Costa et al. 2022, JMLR, scripts/pretrain/cifar/mocov3.yaml):
           ResNet-18 CIFAR stem, projector 4096-256 and predictor 4096-256 (BN), temperature
           0.2, momentum 0.99 -> 1 (cosine), LARS lr 0.3 x batch/256 (eta 0.02), weight decay
           1e-6, batch 256, 1000 epochs:
             python -m sslax.main --config=configs/moco_v3.py:cifar10 --workdir=workdirs/moco_v3_cifar10
  vit      ViT-Small/4 on CIFAR-10 with the paper's ViT settings (AdamW lr 1.5e-4 x batch/256,
           weight decay 0.1, 3-layer projector and 2-layer predictor of 4096 hidden units, 256
           out, temperature 0.2, momentum 0.99 -> 1, 40 warm-up epochs, batch 256, 1000 epochs):
             python -m sslax.main --config=configs/moco_v3.py:vit --workdir=workdirs/moco_v3_vit
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD,
           11 epochs) with 512-wide heads (BENCHMARKS.md):
             python -m sslax.main --config=configs/moco_v3.py:cpu --workdir=workdirs/moco_v3_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "vit", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10`, `vit` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, preset_width, solo_learn_cifar

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  sizes = "cifar10" if preset == "vit" else preset
  c = base_config("moco_v3", sizes)
  width = preset_width(sizes, 4096)
  out = preset_width(sizes, 256, cpu=128, tiny=16)
  c.model.projector = mlp_head((width,), out, last_bn=True)
  c.model.predictor = mlp_head((width,), out)
  c.moco_v3.temperature = 0.2
  c.moco_v3.base_momentum = 0.99
  if preset == "cifar10":
    solo_learn_cifar(c, optimizer="lars", learning_rate=0.3, weight_decay=1e-6)
  elif preset == "vit":
    solo_learn_cifar(c, optimizer="adamw", learning_rate=1.5e-4, weight_decay=0.1)
    c.preset = "vit"
    c.model.backbone = "vit_small"
    c.model.patch_size = 4
    c.model.projector = mlp_head((width, width), out, last_bn=True)
    c.optimizer.b2 = 0.95
    c.warmup_epochs = 40.0
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 0.8
  return c.lock()
