r"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision") and SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training")
on CIFAR-10 with templated captions (a mechanism check of the towers, the losses and zero-shot
evaluation; see sslax/methods/clip.py).

Presets (`--config=configs/clip.py:PRESET`):
  cifar10  An accelerator recipe after CLIP's training details (section 2.5 and appendix F):
           AdamW (beta2 0.98), weight decay 0.2, lr 5e-4 x batch/256 with warm-up and
           cosine decay, learned temperature initialised at 0.07 and clipped at 100, batch 1024,
           ResNet-18 (CIFAR stem) image tower, a 4-block 256-wide byte-level text Transformer,
           512-d shared space, 100 epochs. There is no published CIFAR-10 CLIP recipe; these
           settings are CLIP's, scaled down. `cifar10,loss=siglip` uses SigLIP's loss
           (temperature init 10, bias -10).
  cpu      (default) ResNet-18 x0.25 at 20x20 crops, a 2-block 128-wide text tower, batch 128,
           4 epochs: about 21 minutes on 2 CPU cores (150 images/s; BENCHMARKS.md, "CLIP on
           templated CIFAR-10").
  tiny     A few steps of a tiny model, for tests.

Option `loss=clip|siglip` picks the loss (`--config.clip.loss` does the same).

Your own image-caption pairs: `--config.clip.captions=dataset` with a folder of images and a
caption file per image (`--config.data.source=folder --config.data.folder=DIR
--config.data.captions=txt`, DIR/cat1.jpg + DIR/cat1.txt, one caption per line) or a CSV of
(path, caption) rows (`--config.data.captions=captions.csv`), or a TFDS dataset with a caption
feature (`--config.data.name=coco_captions --config.data.caption_feature=captions/text
--config.data.image_size=64`); up to `data.max_captions` per image, one drawn per step.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  import math

  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, text_tower

  preset, options = parse_arg(arg, PRESETS, default="cpu", options=("loss",))
  c = base_config("clip", preset)
  c.clip.loss = options.get("loss", "clip")
  siglip = c.clip.loss == "siglip"
  scale_init = math.log(10.0) if siglip else math.log(1 / 0.07)
  width, depth, dim = {"cifar10": (256, 4, 512), "cpu": (128, 2, 128), "tiny": (32, 1, 16)}[preset]
  c.model.projector = mlp_head((), dim, use_bn=False)  # CLIP's image projection is linear.
  c.model.text = text_tower(width, depth, num_heads=4, max_len=48, logit_scale_init=scale_init)
  c.data.caption_max_len = c.model.text.get_ref("max_len")  # Dataset captions: the text tower's length.
  c.optimizer.name = "adamw"
  c.optimizer.b2 = 0.98
  c.optimizer.base_learning_rate = 5e-4
  c.optimizer.weight_decay = 0.2
  c.optimizer.lr_scaling = "linear"
  c.online_probe.enabled = True
  if preset == "cifar10":
    c.batch_size = 1024
    c.total_epochs = 100.0
    c.warmup_epochs = 2.0
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 1e-3
    c.total_epochs = 4.0  # 1,560 steps at 0.85 s: the text tower and one view cost more per image than SimCLR.
  return c.lock()
