r"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

Presets (`--config=configs/dino.py:PRESET`):
  cifar10  solo-learn's CIFAR-10 recipe (da Costa et al. 2022, JMLR, scripts/pretrain/cifar/dino.yaml
           and solo-learn's DINO defaults): ResNet-18 CIFAR stem, head 2048-2048-256 (BN, GELU)
           into 4096 weight-normalised prototypes, teacher momentum 0.9995 -> 1 (cosine),
           student temperature 0.1, teacher 0.04 -> 0.07 over 50 epochs, centre momentum 0.9,
           last layer frozen for the first epoch, LARS lr 0.3 x batch/256 (eta 0.02), weight
           decay 1e-6, batch 256, 1000 epochs, two 32x32 crops (multi-crop:
           --config.augment.num_local_crops=N):
             python -m sslax.main --config=configs/dino.py:cifar10 --workdir=workdirs/dino_cifar10
  vit      ViT-Small/4 with the paper's ViT settings (AdamW lr 5e-4 x batch/256, weight decay
           0.04, head without BN, 10 warm-up epochs, teacher momentum 0.996, teacher temperature
           0.04 -> 0.07 over 30 epochs, 2 global + 6 local 16x16 crops):
             python -m sslax.main --config=configs/dino.py:vit --workdir=workdirs/dino_vit
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, 11 epochs)
           with lightly's ResNet-18 DINO benchmark settings: SGD lr 0.06 at batch 128, head
           512-512-128 into 2048 prototypes, teacher momentum 0.99, teacher temperature 0.04,
           multi-crop 2x20 + 2x12 pixels (BENCHMARKS.md):
             python -m sslax.main --config=configs/dino.py:cpu --workdir=workdirs/dino_cpu
  tiny     A few steps of a tiny model with 2 local crops, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "vit", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10`, `vit` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, cpu_multicrop, mlp_head, preset_width, solo_learn_cifar

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  sizes = "cifar10" if preset == "vit" else preset
  c = base_config("dino", sizes)
  width = preset_width(sizes, 2048)
  c.model.projector = mlp_head((width, width), preset_width(sizes, 256, cpu=128, tiny=16), activation="gelu")
  c.model.num_prototypes = {"cifar10": 4096, "cpu": 1024, "tiny": 24}[sizes]
  c.dino.base_momentum = 0.9995
  c.dino.student_temperature = 0.1
  c.dino.teacher_temperature = 0.07
  c.dino.warmup_teacher_temperature = 0.04
  c.dino.warmup_teacher_temperature_epochs = 50.0
  c.dino.center_momentum = 0.9
  c.dino.freeze_last_layer_epochs = 1.0
  if preset == "cifar10":
    solo_learn_cifar(c, optimizer="lars", learning_rate=0.3, weight_decay=1e-6)
  elif preset == "vit":
    solo_learn_cifar(c, optimizer="adamw", learning_rate=5e-4, weight_decay=0.04)
    c.preset = "vit"
    c.model.backbone = "vit_small"
    c.model.patch_size = 4
    c.model.projector.use_bn = False
    c.dino.base_momentum = 0.996
    c.dino.warmup_teacher_temperature_epochs = 30.0
    c.augment.crop_scale = (0.25, 1.0)
    c.augment.num_local_crops = 6
    c.augment.local_crop_size = 16
    c.augment.local_crop_scale = (0.05, 0.25)
  elif preset == "cpu":
    # lightly's ResNet-18 DINO benchmark settings (SGD lr 0.06 at batch 128, weight decay 5e-4,
    # teacher momentum 0.99, teacher temperature 0.04 throughout, 2048 prototypes). A first CPU
    # run at lr 0.4 with the teacher warmed up to 0.07 drifted to uniform collapse (BENCHMARKS.md).
    c.model.num_prototypes = 2048
    c.optimizer.base_learning_rate = 0.12
    c.dino.base_momentum = 0.99
    c.dino.teacher_temperature = 0.04
    c.dino.warmup_teacher_temperature_epochs = 0.0
    c.dino.freeze_last_layer_epochs = 0.3
    cpu_multicrop(c)
  elif preset == "tiny":
    c.dino.warmup_teacher_temperature_epochs = 0.0
    c.dino.freeze_last_layer_epochs = 0.0
    c.augment.num_local_crops = 2
    c.augment.local_crop_size = 8
  return c.lock()
