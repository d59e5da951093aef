r"""Split-brain autoencoder (Zhang, Isola & Efros 2017, "Split-Brain Autoencoders: Unsupervised
Learning by Cross-Channel Prediction", CVPR).

Presets (`--config=configs/split_brain.py:PRESET`):
  cifar10  The paper's objective on CIFAR-10: the network is split in two halves of half
           the width, one on the L channel of CIE Lab predicting ab (classification over
           the in-gamut 10-unit ab bins, soft-encoded), one on ab predicting L
           (classification over 50 bins of L); the representation is the concatenation of
           the halves' features. Crops of 32x32 with flips, batch 256, SGD momentum 0.9,
           lr 0.1 x batch/256 with a cosine decay, weight decay 5e-4, 200 epochs.
           Differences: two half-width ResNet-18s (CIFAR stem) whose pooled features
           convolutional decoders turn into per-pixel logits, instead of the paper's
           fully convolutional AlexNet halves trained on ImageNet:
             python -m sslax.main --config=configs/split_brain.py:cifar10 --workdir=workdirs/split_brain_cifar10
  cpu      (default) two ResNet-18 x0.125 halves (x0.25 in all), batch 128, 16x16 crops,
           11 epochs:
             python -m sslax.main --config=configs/split_brain.py:cpu --workdir=workdirs/split_brain_cpu
  tiny     A few steps of a tiny model, for tests.

The backbone's input is config.model.input='split_brain': evaluation feeds the L and ab
channels of the RGB test images to the two halves. At the end of training
`<workdir>/preview.png` shows test images, their L channel, the L half's colourisation and
the ab half's lightness with the true colours.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.augment.color import ab_bin_centres
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, channel_prediction

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("split_brain", preset)
  channel_prediction(c, preset, input_kind="split_brain",
                     out_channels=(len(ab_bin_centres()), c.split_brain.lightness_bins))
  return c.lock()
