r"""Denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol 2008, "Extracting and Composing
Robust Features with Denoising Autoencoders", ICML).

Presets (`--config=configs/denoising_ae.py:PRESET`):
  cifar10  The paper's objective on CIFAR-10: masking noise on 25% of the pixels (the
           paper: 10-40% of the inputs), squared-error reconstruction of the clean image
           through a bottleneck (the ResNet-18's 512-d pooled feature, then a
           convolutional decoder: Dense to 4x4x256 and three 2x up-convolutions), random
           crops and flips, batch 256, SGD momentum 0.9, lr 0.1 x batch/256 with a cosine
           decay, weight decay 5e-4, 200 epochs. Differences: a ResNet-18 (CIFAR stem)
           encoder instead of the paper's one-layer sigmoid MLP, trained end to end rather
           than layer-wise:
             python -m sslax.main --config=configs/denoising_ae.py:cifar10 --workdir=workdirs/dae_cifar10
  cpu      (default) ResNet-18 x0.25, batch 128, 16x16 crops (multiples of the decoder's
           8x upsampling), 11 epochs:
             python -m sslax.main --config=configs/denoising_ae.py:cpu --workdir=workdirs/dae_cpu
  tiny     A few steps of a tiny model, for tests.

At the end of training `<workdir>/preview.png` shows test images, their corrupted copies
and the reconstructions.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, conv_decoder, plain_pretext, preset_width

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("denoising_ae", preset)
  c.model.decoder = conv_decoder(preset_width(preset, 256, cpu=64, tiny=16))
  plain_pretext(c, preset, crop_size=16 if preset != "cifar10" else 32)
  return c.lock()
