r"""Instance discrimination with a memory bank, InstDisc / NPID (Wu, Xiong, Yu & Lin 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR).

Presets (`--config=configs/npid.py:PRESET`):
  imagenet The paper's ImageNet recipe: ResNet-50, a linear projection to 128 dimensions,
           memory bank of every image with momentum 0.5, NCE with 4096 negatives and Z
           estimated on the first batch, temperature 0.07, batch 256, SGD momentum 0.9, lr 0.03,
           weight decay 5e-4, 200 epochs (the paper decays the lr at 120 and 160; here cosine),
           the paper's augmentations (random resized crop, grayscale, colour jitter, flip):
             python -m sslax.main --config=configs/npid.py:imagenet --workdir=gs://BUCKET/npid_in1k
  cifar10  The authors' CIFAR-10 code (lemniscate): ResNet-18 (CIFAR stem), batch 128, 4096
           negatives, temperature 0.1, lr 0.03, 200 epochs:
             python -m sslax.main --config=configs/npid.py:cifar10 --workdir=workdirs/npid_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD) with
           one view per image, so 22 epochs in the time of SimCLR's 11. Two departures keep the
           short run stable (BENCHMARKS.md, "NPID"): BatchNorm on the 128-d output of the linear
           head, and temperature 0.1 (the authors' CIFAR value); without them the loss climbs and
           the embeddings collapse within 500 steps:
             python -m sslax.main --config=configs/npid.py:cpu --workdir=workdirs/npid_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "imagenet", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10`, `imagenet` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, imagenet_recipe, mlp_head

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("npid", "cifar10" if preset == "imagenet" else preset)
  c.model.projector = mlp_head((), 16 if preset == "tiny" else 128, use_bn=False)  # The paper's linear layer.
  c.augment.grayscale_prob = 0.2
  c.optimizer.name = "sgd"
  c.optimizer.weight_decay = 5e-4
  c.npid.num_negatives = 8 if preset == "tiny" else 4096
  if preset == "cifar10":
    c.npid.temperature = 0.1
    c.batch_size = 128
    c.optimizer.base_learning_rate = 0.06  # x batch/256 = 0.03 at batch 128.
    c.total_epochs = 200.0
    c.warmup_epochs = 0.0
  elif preset == "imagenet":
    imagenet_recipe(c, epochs=200.0, learning_rate=0.03, weight_decay=5e-4, batch_size=256)
    c.optimizer.name = "sgd"
    c.model.projector = mlp_head((), 128, use_bn=False)
    c.warmup_epochs = 0.0
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 0.12  # x batch/256 = 0.06 at batch 128.
    c.total_epochs = 22.0
    c.npid.temperature = 0.1
    c.model.projector = mlp_head((), 128, use_bn=True, last_bn=True)
  return c.lock()
