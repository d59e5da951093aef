r"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments").

Presets (`--config=configs/swav.py:PRESET`):
  cifar10  solo-learn's CIFAR-10 recipe (da Costa et al. 2022, JMLR, scripts/pretrain/cifar/swav.yaml):
           ResNet-18 CIFAR stem, projector 2048-128, 3000 prototypes, temperature 0.1,
           Sinkhorn epsilon 0.05 with 3 iterations, prototypes frozen for 2 epochs, a queue of
           3840 from epoch 50, LARS lr 0.6 x batch/256 (eta 0.02), weight decay 1e-6, batch 256,
           1000 epochs, two 32x32 crops (add multi-crop with --config.augment.num_local_crops=N):
             python -m sslax.main --config=configs/swav.py:cifar10 --workdir=workdirs/swav_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, 11 epochs)
           with lightly's ResNet-18 SwAV benchmark settings: SGD lr 0.06 at batch 128, projector
           512-128, 512 prototypes, no queue, multi-crop 2x20 + 2x12 pixels (BENCHMARKS.md):
             python -m sslax.main --config=configs/swav.py:cpu --workdir=workdirs/swav_cpu
  tiny     A few steps of a tiny model with 2 local crops and a queue, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, cpu_multicrop, mlp_head, preset_width, solo_learn_cifar

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("swav", preset)
  c.model.projector = mlp_head((preset_width(preset, 2048),), preset_width(preset, 128, cpu=128, tiny=16))
  c.model.num_prototypes = {"cifar10": 3000, "cpu": 512, "tiny": 24}[preset]
  c.swav.temperature = 0.1
  c.swav.epsilon = 0.05
  c.swav.sinkhorn_iterations = 3
  c.swav.freeze_prototypes_epochs = 2.0
  c.swav.queue_size = 3840
  c.swav.queue_start_epoch = 50.0
  if preset == "cifar10":
    solo_learn_cifar(c, optimizer="lars", learning_rate=0.6, weight_decay=1e-6)
  elif preset == "cpu":
    # lightly's ResNet-18 SwAV benchmark settings (SGD lr 0.06 at batch 128, weight decay 5e-4,
    # 512 prototypes, no queue). A first CPU run at lr 0.4 with a queue of 1280 from epoch 1
    # collapsed to effective rank 2 when the queue joined (BENCHMARKS.md).
    c.optimizer.base_learning_rate = 0.12
    c.swav.freeze_prototypes_epochs = 0.3
    c.swav.queue_size = 0
    cpu_multicrop(c)
  elif preset == "tiny":
    c.swav.freeze_prototypes_epochs = 0.0
    c.swav.queue_size = 32
    c.swav.queue_start_epoch = 0.0
    c.augment.num_local_crops = 2
    c.augment.local_crop_size = 8
  return c.lock()
