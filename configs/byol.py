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
  imagenet The published ImageNet recipe (BYOL section 3.3 and appendix C): ResNet-50, batch 4096,
           LARS lr 0.2 x batch/256 (3.2), weight decay 1.5e-6, 10 warm-up epochs then cosine,
           target momentum 0.996 -> 1 (cosine), projector and predictor 4096-256, 224x224 crops
           of the full image, colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2,
           blur p=(1.0, 0.1), solarize p=(0.0, 0.2), 1000 epochs (`imagenet,epochs=300` for the
           shorter run); ImageNet streamed from TFDS (README "ImageNet"):
             python -m sslax.main --config=configs/byol.py:imagenet --workdir=gs://BUCKET/byol_in1k
  tiny     A few steps of a tiny model, for tests.

Option `epochs=N` sets total_epochs.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "imagenet", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10`, `imagenet` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, imagenet_recipe, mlp_head, preset_width, solo_learn_cifar

  preset, options = parse_arg(arg, PRESETS, default="cpu", options=("epochs",))
  sizes = "cifar10" if preset == "imagenet" else preset
  c = base_config("byol", sizes)
  width = preset_width(sizes, 4096)
  out = preset_width(sizes, 256, cpu=128, tiny=16)
  c.model.projector = mlp_head((width,), out)
  c.model.predictor = mlp_head((width,), out)
  c.byol.base_momentum = 0.99
  if preset == "cifar10":
    solo_learn_cifar(c, optimizer="lars", learning_rate=1.0, weight_decay=1e-5)
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 1.0
  elif preset == "imagenet":
    imagenet_recipe(c, epochs=1000.0, learning_rate=0.2, weight_decay=1.5e-6)
    c.byol.base_momentum = 0.996
    a = c.augment
    a.brightness, a.contrast, a.saturation, a.hue = 0.4, 0.4, 0.2, 0.1
    a.blur_prob = (1.0, 0.1)
    a.solarize_prob = (0.0, 0.2)
  if "epochs" in options:
    c.total_epochs = float(options["epochs"])
  return c.lock()
