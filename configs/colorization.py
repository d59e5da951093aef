r"""Colourisation (Zhang, Isola & Efros 2016, "Colorful Image Colorization", ECCV).

Presets (`--config=configs/colorization.py:PRESET`):
  cifar10  The paper's objective on CIFAR-10: the network sees the L channel of CIE Lab
           and classifies every pixel's ab over the in-gamut bins of a 10-unit grid
           (soft-encoded targets: 5 nearest bins, sigma 5), with class rebalancing
           (lambda = 0.5, prior smoothed with sigma 5, estimated from the training pixels
           before step 0); annealed-mean decoding (T = 0.38) for the preview. Crops of
           32x32 with flips, batch 256, SGD momentum 0.9, lr 0.1 x batch/256 with a cosine
           decay, weight decay 5e-4, 200 epochs. Differences: a ResNet-18 (CIFAR stem)
           encoder whose pooled features a convolutional decoder (Dense to 4x4x256, three
           2x up-convolutions) turns into per-pixel logits, instead of the paper's fully
           convolutional VGG trained with Adam on ImageNet; 261 bins instead of 313 (see
           sslax.augment.color.ab_bin_centres):
             python -m sslax.main --config=configs/colorization.py:cifar10 --workdir=workdirs/colorization_cifar10
  cpu      (default) ResNet-18 x0.25, batch 128, 16x16 crops, 11 epochs:
             python -m sslax.main --config=configs/colorization.py:cpu --workdir=workdirs/colorization_cpu
  tiny     A few steps of a tiny model, for tests.

The backbone's input is config.model.input='lightness': evaluation (kNN, linear probe,
fine-tuning) feeds it the L channel of the RGB test images. At the end of training
`<workdir>/preview.png` shows test images, their L channel and the colourisations.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.augment.color import ab_bin_centres
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, channel_prediction

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("colorization", preset)
  channel_prediction(c, preset, input_kind="lightness", out_channels=len(ab_bin_centres()))
  if preset == "tiny":
    c.colorization.prior_batches = 2
  return c.lock()
