r"""RotNet (Gidaris, Singh & Komodakis 2018, "Unsupervised Representation Learning by Predicting
Image Rotations", ICLR).

Presets (`--config=configs/rotnet.py:PRESET`):
  cifar10  The paper's CIFAR-10 recipe (section 3.1 and its code, gidariss/FeatureLearningRotNet):
           all four rotations of every image in the batch, batch 128, SGD momentum 0.9
           (Nesterov), lr 0.1, weight decay 5e-4, 100 epochs, random crop and horizontal flip
           only. Differences: a ResNet-18 (CIFAR stem) with a 512-4 MLP classifier instead of
           the paper's Network-In-Network, and a cosine decay instead of the x0.2 drops at
           epochs 30, 60 and 80:
             python -m sslax.main --config=configs/rotnet.py:cifar10 --workdir=workdirs/rotnet_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD, 11
           epochs); four rotations make 512 crops a step (not yet benchmarked):
             python -m sslax.main --config=configs/rotnet.py:cpu --workdir=workdirs/rotnet_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, preset_width

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("rotnet", preset)
  c.model.projector = mlp_head((preset_width(preset, 512, cpu=256, tiny=32),), 4)  # The rotation classifier.
  # Random crop and flip only: colour changes are no part of the task (and RotNet used none).
  c.augment.crop_scale = (0.6, 1.0)
  c.augment.crop_ratio = (1.0, 1.0)
  c.augment.color_jitter_prob = 0.0
  c.augment.grayscale_prob = 0.0
  c.optimizer.name = "sgd"
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-4
  c.optimizer.base_learning_rate = 0.2  # x batch/256: 0.1 at batch 128, the paper's rate.
  if preset == "cifar10":
    c.batch_size = 128
    c.total_epochs = 100.0
    c.warmup_epochs = 0.0
  return c.lock()
