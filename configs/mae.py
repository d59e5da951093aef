r"""Masked autoencoders (He, Chen, Xie, Li, Dollar & Girshick 2022, "Masked Autoencoders Are Scalable
Vision Learners", CVPR; code: github.com/facebookresearch/mae).

A ViT encodes a random 25% of each view's patches; a lightweight Transformer decoder (its own
width, depth and heads: `config.model.decoder`, see sslax.presets.vit_decoder) fills the
other 75% with a learned mask token and predicts their pixels, standardised per patch
(norm_pix_loss); the loss is their mean squared error. Views: random resized crops of 20-100%
of the image and flips, no colour changes (the paper's pre-training augmentation); AdamW
with betas (0.9, 0.95) and a cosine schedule after a linear warm-up. ViT backbones only.

Presets (`--config=configs/mae.py:PRESET`):
  imagenet The paper's ImageNet-1k recipe (appendix A.1, Table 8): ViT-B/16 encoder, mask
           ratio 0.75, decoder width 512, depth 8, 16 heads, norm_pix_loss, batch 4096, AdamW
           lr 1.5e-4 x batch/256 (2.4e-3), betas (0.9, 0.95), weight decay 0.05, 40 warm-up
           epochs then cosine, 800 epochs (the paper's longest runs take 1600:
           --config.total_epochs=1600), 224x224 crops of 20-100% of the image with flips;
           ImageNet streamed from TFDS (README "ImageNet"):
             python -m sslax.main --config=configs/mae.py:imagenet --workdir=gs://BUCKET/mae_in1k
  cifar10  The CIFAR-10 sizes of IcarusWizard/MAE (github.com/IcarusWizard/MAE, a widely used
           PyTorch reproduction on CIFAR-10, mae_pretrain.py and model.py): ViT-Tiny/2 on
           32x32 images (256 patches, 64 visible), mask ratio 0.75, decoder width 192, depth
           4, 3 heads, batch 4096, AdamW lr 1.5e-4 x batch/256, betas (0.9, 0.95), weight decay
           0.05, 200 warm-up epochs then cosine, 2000 epochs. Differences: the paper's
           norm_pix_loss and crops (scale 0.2-1) with flips instead of its plain pixels of
           whole images:
             python -m sslax.main --config=configs/mae.py:cifar10 --workdir=workdirs/mae_cifar10
  cpu      (default) About 20 minutes of training on the 2-core reference machine: ViT-Tiny/4
           on 32x32 CIFAR-10 crops (64 patches, 16 visible), mask ratio 0.75, decoder width
           128, depth 2, 4 heads, batch 64, AdamW lr 1e-3 (no batch scaling), betas (0.9,
           0.95), weight decay 0.05, 2.3 epochs (1,797 steps) with a 0.25-epoch warm-up, so
           that the cosine schedule ends within the 20 minutes (85-105 images/s there, the same
           at batch 64 as at 128: twice the updates for the same images). The image feature is
           the mean of the patch tokens (model.pool = mean, MAE's `global_pool`): on a 975-step
           checkpoint it probed 0.512 against the class token's 0.486 (10k/2k-image subset;
           BENCHMARKS.md). kNN only at the end: its feature extraction (60,000 images through
           all 65 tokens) takes several minutes:
             python -m sslax.main --config=configs/mae.py:cpu --workdir=workdirs/mae_cpu
  tiny     A few steps of a tiny model (vit_test, patch 4 on 16x16 crops), for tests:
             python -m sslax.main --config=configs/mae.py:tiny --workdir=/tmp/mae_tiny

At the end of training `<workdir>/preview.png` shows test images, the masked inputs and
the reconstructions (visible patches from the input, hidden ones predicted).
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "imagenet", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10`, `imagenet` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, imagenet_recipe, vit_decoder

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("mae", "cifar10" if preset == "imagenet" else preset)
  c.mae.mask_ratio = 0.75
  c.mae.norm_pix_loss = True
  if preset == "imagenet":
    imagenet_recipe(c, epochs=800.0, batch_size=4096, learning_rate=1.5e-4, weight_decay=0.05)
  # The paper's encoder sizes and decoders: width, depth, heads.
  c.model.backbone, c.model.patch_size = {"imagenet": ("vit_base", 16), "cifar10": ("vit_tiny", 2),
                                          "cpu": ("vit_tiny", 4), "tiny": ("vit_test", 4)}[preset]
  c.model.decoder = {"imagenet": vit_decoder(512, 8, 16), "cifar10": vit_decoder(192, 4, 3),
                     "cpu": vit_decoder(128, 2, 4), "tiny": vit_decoder(16, 1, 2)}[preset]
  # Views: RandomResizedCrop(scale=(0.2, 1.0)) and flips only (main_pretrain.py).
  c.augment.crop_size = {"imagenet": 224, "tiny": 16}.get(preset, 32)
  c.augment.crop_scale = (0.2, 1.0)
  c.augment.color_jitter_prob = 0.0
  c.augment.grayscale_prob = 0.0
  c.augment.blur_prob = (0.0, 0.0)
  c.augment.solarize_prob = (0.0, 0.0)
  c.optimizer.name = "adamw"
  c.optimizer.b1, c.optimizer.b2 = 0.9, 0.95
  c.optimizer.weight_decay = 0.05
  c.optimizer.base_learning_rate = 1.5e-4
  c.optimizer.lr_scaling = "linear"
  if preset == "imagenet":
    c.warmup_epochs = 40.0
  elif preset == "cifar10":
    c.batch_size = 4096
    c.total_epochs = 2000.0
    c.warmup_epochs = 200.0
  elif preset == "cpu":
    c.batch_size = 64
    c.optimizer.base_learning_rate = 1e-3
    c.optimizer.lr_scaling = "none"
    c.total_epochs = 2.3
    c.warmup_epochs = 0.25
    c.model.pool = "mean"
    c.knn.every_steps = 0  # Only at the end: the ViT's features cost minutes to extract on 2 cores.
  elif preset == "tiny":
    # SGD, as counting's tiny preset: Adam's normalised steps amplify the float noise of
    # identically zero gradients (the attention's key bias), which the 8-devices-equal-1
    # contract test would have to tolerate.
    c.optimizer.name = "sgd"
    c.optimizer.base_learning_rate = 0.1
    c.optimizer.lr_scaling = "none"
    c.optimizer.weight_decay = 5e-4
  return c.lock()
