r"""PIRL (Misra & van der Maaten 2020, "Self-Supervised Learning of Pretext-Invariant
Representations", CVPR): an image and its jigsaw-shuffled tiles both match the image's
memory-bank row (sslax/methods/pirl.py).

Presets (`--config=configs/pirl.py:PRESET`):
  imagenet The paper's ImageNet recipe: ResNet-50, a linear projection of the image feature
           to 128 dimensions and of the 9 concatenated tile projections to 128, memory bank
           with momentum 0.5, NCE with 32,000 negatives, temperature 0.07, loss weight lambda
           0.5, batch 1024, SGD momentum 0.9 with lr 0.12 and weight decay 1e-4, cosine, 800
           epochs; tiles of 64 pixels from 255-pixel crops (here 74-pixel cells of 224-pixel crops):
             python -m sslax.main --config=configs/pirl.py:imagenet --workdir=gs://BUCKET/pirl_in1k
  cifar10  The same at CIFAR-10 scale: ResNet-18 (CIFAR stem), 32x32 crops cut into 9-pixel
           tiles, 4096 negatives, batch 256, the paper's lr scaled linearly (0.03 x batch/256),
           800 epochs:
             python -m sslax.main --config=configs/pirl.py:cifar10 --workdir=workdirs/pirl_cifar10
  cpu      (default) ResNet-18 x0.25, batch 128, 20x20 crops cut into 5-pixel tiles (a 3x3
           grid of 6-pixel cells), 4096 negatives, SGD, 8 epochs scheduled (20 minutes on 2 CPU
           cores reach about 4). Like NPID's cpu preset it puts BatchNorm on the outputs of f
           and g and uses temperature 0.1, which keep a short memory-bank run stable
           (BENCHMARKS.md, "NPID"):
             python -m sslax.main --config=configs/pirl.py:cpu --workdir=workdirs/pirl_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "imagenet", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10`, `imagenet` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, imagenet_recipe, mlp_head

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("pirl", "cifar10" if preset == "imagenet" else preset)
  dim = 16 if preset == "tiny" else 128
  c.model.projector = mlp_head((), dim, use_bn=False)  # The paper's linear f (and per-tile projection).
  c.model.classifier = mlp_head((), dim, use_bn=False)  # g: the 9 concatenated tile projections to the bank.
  c.augment.grayscale_prob = 0.2
  c.optimizer.name = "sgd"
  c.optimizer.weight_decay = 1e-4
  c.optimizer.base_learning_rate = 0.03  # x batch/256: the paper's 0.12 at batch 1024.
  c.pirl.num_negatives = 8 if preset == "tiny" else 4096
  if preset == "tiny":
    c.pirl.tile_size = 4  # 16x16 crops: 5-pixel cells.
  elif preset == "cifar10":
    c.batch_size = 256
    c.augment.crop_size = 32
    c.pirl.tile_size = 9
    c.total_epochs = 800.0
    c.warmup_epochs = 0.0
  elif preset == "imagenet":
    imagenet_recipe(c, epochs=800.0, learning_rate=0.03, weight_decay=1e-4, batch_size=1024)
    c.optimizer.name = "sgd"
    c.model.projector = mlp_head((), 128, use_bn=False)
    c.model.classifier = mlp_head((), 128, use_bn=False)
    c.pirl.num_negatives = 32000
    c.pirl.tile_size = 64
    c.warmup_epochs = 0.0
  elif preset == "cpu":
    # 20x20 crops (NPID's cpu size) cut into 5-pixel tiles of 6-pixel cells: a backbone pass over
    # the batch's image and 9 tiles took 0.69 s instead of 0.78-0.87 s at 24 and 7 pixels.
    c.augment.crop_size = 20
    c.pirl.tile_size = 5
    # x batch/256 = 0.12 at batch 128: short runs want a larger rate (BENCHMARKS.md, "PIRL").
    c.optimizer.base_learning_rate = 0.24
    # 20 minutes reach about 4 of the 8 epochs; a schedule ending where 20 minutes ended (3.2
    # epochs at 24-pixel crops) scored lower (BENCHMARKS.md, "PIRL").
    c.total_epochs = 8.0
    c.pirl.temperature = 0.1
    c.model.projector = mlp_head((), 128, use_bn=True, last_bn=True)
    c.model.classifier = mlp_head((), 128, use_bn=True, last_bn=True)
  return c.lock()
