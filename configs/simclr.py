r"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Presets (`--config=configs/simclr.py:PRESET`):
  cpu      (default) ResNet-18 (CIFAR stem, width x0.25), batch 128, 20x20 crops, SGD,
           temperature 0.2, 18 epochs (the other methods' cpu presets: 11): 17.2 minutes of
           training on a 2-core CPU with the native convolution kernels (sslax/native), one XLA
           device per core and tcmalloc (sslax/host.py), kNN top-1 0.645 (14 epochs before the
           native kernels: 0.634; BENCHMARKS.md):
             python -m sslax.main --config=configs/simclr.py:cpu --workdir=workdirs/simclr_cpu
  cifar10  The published CIFAR-10 recipe for accelerators (SimCLR appendix B.9): ResNet-18 with the
           CIFAR stem, batch 512, LARS (lr 1.0 x batch/256, weight decay 1e-6, 10 warm-up epochs,
           cosine decay), temperature 0.5, colour-jitter strength 0.5, no blur, 800 epochs:
             python -m sslax.main --config=configs/simclr.py:cifar10 --workdir=workdirs/simclr_cifar10
  imagenet The published ImageNet recipe (SimCLR section 4 and appendix B): ResNet-50, batch 4096,
           LARS lr 0.3 x batch/256 (4.8), weight decay 1e-6, 10 warm-up epochs then cosine,
           temperature 0.1, projector 2048-2048-128, 224x224 crops of the full image, colour
           strength 1.0, blur p=0.5 on both views, 100 epochs (`imagenet,epochs=1000` for the
           paper's 1000-epoch run); ImageNet streamed from TFDS (README "ImageNet"):
             python -m sslax.main --config=configs/simclr.py:imagenet --workdir=gs://BUCKET/simclr_in1k
  tiny     A few steps of a tiny model, for tests:
             python -m sslax.main --config=configs/simclr.py:tiny --workdir=/tmp/simclr_tiny

Option `epochs=N` (e.g. `configs/simclr.py:imagenet,epochs=1000`) sets total_epochs.

Any field can be overridden: --config.batch_size=256 --config.optimizer.name=sgd ...
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "imagenet", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10`, `imagenet` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, imagenet_recipe, mlp_head

  preset, options = parse_arg(arg, PRESETS, default="cpu", options=("epochs",))
  c = base_config("simclr", "cifar10" if preset == "imagenet" else preset)
  c.simclr.temperature = 0.5
  if preset == "cpu":
    c.simclr.temperature = 0.2  # Better than 0.5 in 3-minute runs (BENCHMARKS.md).
    # Native convolution kernels (sslax/native), one XLA device per core, tcmalloc: 905-930 img/s
    # (620-645 with the GEMM gradients, when 14 epochs filled 15-19 minutes).
    c.total_epochs = 18.0
  elif preset == "imagenet":
    imagenet_recipe(c, epochs=100.0, learning_rate=0.3, weight_decay=1e-6)
    c.simclr.temperature = 0.1
    c.model.projector = mlp_head((2048,), 128)
    c.augment.blur_prob = (0.5, 0.5)
  if "epochs" in options:
    c.total_epochs = float(options["epochs"])
  return c.lock()
