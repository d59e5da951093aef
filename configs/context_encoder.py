r"""Context encoders (Pathak, Krahenbuhl, Donahue, Darrell & Efros 2016, "Context Encoders:
Feature Learning by Inpainting", CVPR).

Presets (`--config=configs/context_encoder.py:PRESET`):
  cifar10  The paper's objective on CIFAR-10: a random region of a quarter of the area
           hidden (mean colour; blobs of random shape, the paper's choice for feature
           learning, section 3.3; `--config.context_encoder.mask=central` or
           `random_block` for the other variants), an encoder-decoder reconstructing it
           with the L2 loss (weight 0.999) and the adversarial loss of a jointly trained
           discriminator (weight 0.001; Adam lr 2e-4, beta1 0.5), the encoder-decoder with
           Adam lr 2e-4, beta1 0.5 (the paper's solver); 32x32 crops with flips, batch 256,
           200 epochs. Differences: a ResNet-18 (CIFAR stem) encoder, its pooled features
           as the bottleneck and a convolutional decoder (Dense to 4x4x256, three 2x
           up-convolutions) of the whole view, instead of the paper's AlexNet encoder,
           channel-wise fully connected layer and 64x64 centre output on 128x128 images:
             python -m sslax.main --config=configs/context_encoder.py:cifar10 --workdir=workdirs/context_encoder_cifar10
  cpu      (default) ResNet-18 x0.25, batch 128, 16x16 crops (64 hidden pixels), SGD lr 0.1 x
           batch/256 (as the denoising autoencoder's cpu preset), a 32-wide discriminator,
           11 epochs:
             python -m sslax.main --config=configs/context_encoder.py:cpu --workdir=workdirs/context_encoder_cpu
  tiny     A few steps of a tiny model, for tests.

At the end of training `<workdir>/preview.png` shows test images, the masked inputs and
the inpainted images.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, conv_decoder, plain_pretext, preset_width

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("context_encoder", preset)
  c.model.decoder = conv_decoder(preset_width(preset, 256, cpu=64, tiny=16))
  c.context_encoder.discriminator_width = preset_width(preset, 64, cpu=32, tiny=8)
  plain_pretext(c, preset, crop_size=32 if preset == "cifar10" else 16)
  if preset == "cifar10":  # The paper's solver for the encoder-decoder too.
    c.optimizer.name = "adamw"
    c.optimizer.base_learning_rate = 2e-4
    c.optimizer.lr_scaling = "none"
    c.optimizer.b1 = 0.5
    c.optimizer.weight_decay = 0.0
  return c.lock()
