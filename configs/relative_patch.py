r"""Relative patch location (Doersch, Gupta & Efros 2015, "Unsupervised Visual Representation
Learning by Context Prediction", ICCV).

Presets (`--config=configs/relative_patch.py:PRESET`):
  cifar10  The paper's task scaled to CIFAR-10: the centre cell of a 3x3 grid and one of its
           8 neighbours (32x32 crops, 10-pixel cells, 9-pixel patches, so a random gap of
           0-2 pixels; the paper: 96-pixel patches, a 48-pixel gap and up to 7 pixels of
           jitter), colour dropping on every patch, a shared patch encoder with a per-patch
           head (fc6, 1024) and a classifier over the pair (fc 4096, then 8 outputs); batch
           256. Differences: a ResNet-18 (CIFAR stem) with BatchNorm instead of the paper's
           AlexNet-style network, SGD with Nesterov momentum, lr 0.1 and a cosine decay, 100
           epochs:
             python -m sslax.main --config=configs/relative_patch.py:cifar10 --workdir=workdirs/relpatch_cifar10
  cpu      (default) ResNet-18 x0.25, batch 32 with all 8 neighbours of each image, each
           classified against the image's one encoding of the centre patch (288 patches and
           256 pairs a step; lr 0.4 x 32/256 = 0.05 as with batch 128 before), views upscaled
           to 48x48 (16-pixel cells, 11-pixel patches: a random gap of 0-10 pixels, nearer
           the paper's half-patch gap than 9-pixel patches in 10-pixel cells, which leave
           edge continuity to solve the task), no colour dropping (CIFAR's 32-pixel photos
           carry no chromatic aberration to hide, and a network trained on one colour
           channel is probed on RGB images), SimCLR's colour jitter on the view (p 0.8,
           strength 0.5; all patches of an image share it), 7 epochs (about 19 minutes on 2
           cores). On the 3x3 grid: +8.4 / +11.3 kNN / linear over the random init, against
           +8.1 / +11.5 with 3 neighbours at batch 64 (12.5 epochs), +7.4-7.8 / +9.6-10.0 with
           the paper's one pair per image (batch 128, 25 epochs), +6.7 / +10.0 without the
           colour jitter, +4.9 / +6.6 with colour dropping on every patch and +1.5 / +2.7 at
           32 px (BENCHMARKS.md):
             python -m sslax.main --config=configs/relative_patch.py:cpu --workdir=workdirs/relpatch_cpu
           Its probes read 48-pixel images (`configs/eval.py ... --config.image_size=48`),
           the size it trains at.
  tiny     A few steps of a tiny model, for tests (3 neighbours per image: cpu's shared-centre
           path, with a random subset of the neighbours).
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, tile_pretext

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("relative_patch", preset)
  tile_pretext(c, preset, num_classes=8)
  if preset == "cpu":
    c.augment.crop_size = 48
    c.relative_patch.tile_size = 11
    c.relative_patch.colour_drop_prob = 0.0
    c.augment.color_jitter_prob = 0.8  # Off in tile_pretext; kNN +1.1 here (BENCHMARKS.md).
    # All 8 pairs share one centre encoding: 8 labels per 9 encoded patches instead of 1 per 2.
    c.relative_patch.neighbours_per_image = 8
    c.batch_size = 32
    c.optimizer.base_learning_rate = 0.4
    c.total_epochs = 7.0
  if preset == "tiny":  # The tests take cpu's shared-centre path (classifier_rows) at a third of its cost.
    c.relative_patch.neighbours_per_image = 3
  return c.lock()
