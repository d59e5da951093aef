r"""DeepCluster v2 (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", appendix: the improved DeepCluster).

Presets (`--config=configs/deepcluster_v2.py:PRESET`):
  cifar10  solo-learn's CIFAR-10 recipe (da Costa et al. 2022, JMLR,
           scripts/pretrain/cifar/deepclusterv2.yaml): ResNet-18 CIFAR stem, projector 2048-128,
           three k-means heads of 3000 prototypes, temperature 0.1, 10 k-means iterations per
           epoch, LARS lr 0.6 x batch/256 (eta 0.02), weight decay 1e-6, batch 256, 11 warm-up
           epochs, 1000 epochs:
             python -m sslax.main --config=configs/deepcluster_v2.py:cifar10 --workdir=workdirs/dcv2_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops, SGD,
           11 epochs), projector 512-128, two heads of 500 prototypes (BENCHMARKS.md):
             python -m sslax.main --config=configs/deepcluster_v2.py:cpu --workdir=workdirs/dcv2_cpu
  tiny     A few steps of a tiny model, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, preset_width, solo_learn_cifar

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("deepcluster_v2", preset)
  c.model.projector = mlp_head((preset_width(preset, 2048),), preset_width(preset, 128, cpu=128, tiny=16))
  c.deepcluster_v2.num_prototypes = {"cifar10": (3000, 3000, 3000), "cpu": (500, 500), "tiny": (6, 4)}[preset]
  c.deepcluster_v2.temperature = 0.1
  c.deepcluster_v2.kmeans_iterations = 10
  if preset == "cifar10":
    solo_learn_cifar(c, optimizer="lars", learning_rate=0.6, weight_decay=1e-6)
    c.warmup_epochs = 11.0
  elif preset == "cpu":
    c.optimizer.base_learning_rate = 0.8
  return c.lock()
