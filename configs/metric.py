r"""The classic metric-learning losses on two views of each image (sslax/methods/metric.py).

`metric.loss` picks the loss: contrastive (Hadsell et al. 2006), triplet with batch_all /
batch_hard / semi_hard mining (Schroff et al. 2015, "FaceNet"; Hermans et al. 2017), n_pair
(Sohn 2016), lifted (Oh Song et al. 2016), nce (Gutmann & Hyvarinen 2010), infonce (Oord
et al. 2018; SimCLR's NT-Xent) or snnl (Frosst et al. 2019). These papers learn from labels;
here the two augmented views of an image are the positive pair (the self-supervised reading
of each loss), so the recipes are SimCLR's with the loss swapped.

Presets (`--config=configs/metric.py:PRESET`; `--config.metric.loss=...` picks the loss):
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD, 11
           epochs) with the triplet loss, semi-hard mining, margin 0.2 (FaceNet's):
             python -m sslax.main --config=configs/metric.py:cpu --workdir=workdirs/metric_cpu
  cifar10  SimCLR's CIFAR-10 recipe (ResNet-18 CIFAR stem, batch 512, LARS lr 1.0 x batch/256,
           800 epochs) with the triplet loss:
             python -m sslax.main --config=configs/metric.py:cifar10 --workdir=workdirs/metric_cifar10
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("metric", preset)
  c.metric.loss = "triplet"
  c.metric.triplet_mining = "semi_hard"
  c.metric.triplet_margin = 0.2
  return c.lock()
