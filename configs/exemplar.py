r"""Exemplar-CNN (Dosovitskiy, Springenberg, Riedmiller & Brox 2014, "Discriminative Unsupervised
Feature Learning with Convolutional Neural Networks", NeurIPS).

Presets (`--config=configs/exemplar.py:PRESET`):
  cifar10  The paper's task on CIFAR-10 with every training image a seed (N = 50000; the
           paper: 8000-16000 seeds from STL-10), heavy augmentation (random crops, scaling,
           flips, strong colour and contrast changes: SimCLR's CIFAR family), classification
           by a normalised softmax (temperature 0.1) over N class vectors; batch 256, SGD
           momentum 0.9, lr 0.1 x batch/256 with a cosine decay, weight decay 5e-4, 200
           epochs. Differences: a ResNet-18 (CIFAR stem) instead of the paper's 3-layer
           network, and a normalised instead of a plain softmax (scales to N = 50000):
             python -m sslax.main --config=configs/exemplar.py:cifar10 --workdir=workdirs/exemplar_cifar10
  cpu      (default) the SimCLR CPU sizes (ResNet-18 x0.25, batch 128, 20x20 crops) with
           the paper's number of seeds, N = 8000 (the first 8000 training images,
           `data.train_split='train[:8000]'`), 70 epochs of them (4375 steps, as many as
           the other cpu presets' 11 epochs of 50000). With N = 50000 a 20-minute run sees
           each class about twice: the loss stayed above ln N and the embeddings collapsed
           to effective rank 2.8 by step 400 (measured), while 8000 seeds are each seen
           about 14 times. The kNN monitor's memory is those 8000 images; evaluate on the
           full split with `configs/eval.py ... --config.train_split=train`:
             python -m sslax.main --config=configs/exemplar.py:cpu --workdir=workdirs/exemplar_cpu
           Every training image a seed: --config.data.train_split=train
           --config.exemplar.num_exemplars=50000 --config.model.num_prototypes=50000
           --config.total_epochs=11.
  tiny     A few steps of a tiny model on the first 1024 training images as seeds, for tests.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head, preset_width

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("exemplar", preset)
  if preset == "tiny":
    c.exemplar.num_exemplars = 1024
    c.data.train_split = "train[:1024]"
  if preset == "cpu":
    c.exemplar.num_exemplars = 8000
    c.data.train_split = "train[:8000]"
    c.total_epochs = 70.0
  c.model.num_prototypes = c.exemplar.num_exemplars
  c.model.projector = mlp_head((preset_width(preset, 2048, cpu=512, tiny=32),), preset_width(preset, 128, cpu=128,
                                                                                             tiny=16))
  c.optimizer.name = "sgd"
  c.optimizer.weight_decay = 5e-4
  c.optimizer.base_learning_rate = 0.1 if preset == "cifar10" else 0.4
  if preset == "cifar10":
    c.batch_size = 256
    c.total_epochs = 200.0
  return c.lock()
