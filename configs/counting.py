r"""Counting visual primitives (Noroozi, Pirsiavash & Favaro 2017, "Representation Learning by
Learning to Count", ICCV).

Presets (`--config=configs/counting.py:PRESET`):
  cifar10  The paper's objective on CIFAR-10: the counting vector (ReLU of a 1000-d head) of
           the 2x-downsampled view must equal the sum of those of its four quadrants, with
           the contrastive term against another image at margin M = 10; the downsampling
           filter drawn per image (box, bilinear, bicubic, Lanczos), as the paper does
           against shortcuts. 32x32 crops (16x16 tiles) with flips, batch 256, Adam lr 3e-4
           with a cosine decay, weight decay 5e-4, 200 epochs. The counting layer starts
           small (initial kernel scale 0.1), as the paper's AlexNet's small initial fc
           outputs did: with default-scale outputs every distance starts far above M, the
           hinge is inactive and the first term alone drives all counts to zero (dead
           ReLUs, measured); SGD at lr 0.05 oscillates between large and vanishing counts
           and collapses by step 50 even from the small start (measured), Adam does not.
           Differences: a ResNet-18 (CIFAR stem) with BatchNorm instead of the paper's
           AlexNet trained on ImageNet (228-pixel images, 114-pixel tiles):
             python -m sslax.main --config=configs/counting.py:cifar10 --workdir=workdirs/counting_cifar10
  cpu      (default) ResNet-18 x0.25, batch 128 (640 inputs of 16x16 a step), a 128-d
           counting vector, 11 epochs:
             python -m sslax.main --config=configs/counting.py:cpu --workdir=workdirs/counting_cpu
  tiny     A few steps of a tiny model (SGD), for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, plain_pretext, preset_width

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("counting", preset)
  c.model.projector = mlp_head((preset_width(preset, 2048, cpu=256, tiny=32),),
                              preset_width(preset, 1000, cpu=128, tiny=16), output_init_scale=0.1)
  plain_pretext(c, preset, crop_size=32 if preset != "tiny" else 16)
  if preset != "tiny":  # tiny keeps SGD: Adam's normalised steps amplify the float noise of
    # near-zero gradients, which the 8-devices-equal-1 contract test would have to tolerate.
    c.optimizer.name = "adamw"
    c.optimizer.base_learning_rate = 3e-4
    c.optimizer.lr_scaling = "none"
  return c.lock()
