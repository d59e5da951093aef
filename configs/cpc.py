r"""Contrastive Predictive Coding v2 (Henaff et al. 2020, "Data-Efficient Image Recognition with
Contrastive Predictive Coding", ICML; CPC: Oord, Li & Vinyals 2018, "Representation Learning
with Contrastive Predictive Coding").

Every preset cuts each view into a grid of overlapping patches, flips (p=0.5) and colour-drops
(p=1; cpu: 0.5) each patch on its own (CPC v2's patch augmentation; no colour jitter on the
view), encodes each patch with the backbone and a linear projection to its vector z, runs CPC
v2's context network over the grid (5 residual blocks of 1x1, 1x3, masked 2x1 and 1x1
convolutions, after the paper's pseudo-code; tiny: 2) and predicts z 1-3 rows ahead (1-5 on
ImageNet), contrasting each prediction with every patch of the global batch by unnormalised
dot products scaled by 0.1 (temperature 10, the pseudo-code's emb_scale). sslax/methods/cpc.py
lists the differences from the paper (BatchNorm in the encoder, top-down predictions only).

Presets (`--config=configs/cpc.py:PRESET`):
  cifar10  The paper's layout scaled to CIFAR-10: 32x32 crops (30-100% of the image) cut into
           a 7x7 grid of 8-pixel patches every 4 pixels (ImageNet: 64-pixel patches every 32);
           ResNet-18 (CIFAR stem), 256-d patch vectors, a 256-wide context network, batch 256
           (12,544 patches a step), Adam (AdamW without decay) lr 2e-3 with 10 warm-up epochs
           and cosine decay, 200 epochs. The CIFAR sizes and the optimizer are ours:
             python -m sslax.main --config=configs/cpc.py:cifar10 --workdir=workdirs/cpc_cifar10
  cpu      (default) the cifar10 layout with ResNet-18 x0.25, 128-d patch vectors and a
           128-wide context network, half the patches colour-dropped, batch 32 (1,568 patches
           a step), one epoch (1,562 steps): about 20 minutes of training on a 2-core CPU
           (0.85 s a step, 36 img/s, measured with other jobs on the cores):
             python -m sslax.main --config=configs/cpc.py:cpu --workdir=workdirs/cpc_cpu
  imagenet CPC's ImageNet layout: a 7x7 grid of 64-pixel patches overlapping by 32 pixels (Oord
           et al. 2018, section 3.2), which needs 256x256 crops (64 + 6 x 32; evaluation at
           224 averages 56-pixel tiles), predictions 1-5 rows ahead. CPC v2's ResNet-161 with
           layer norm is not available here: a ResNet-50 (ImageNet stem, BatchNorm) with
           1024-d patch vectors and a 256-wide context network; batch 512 (25,088 patches a
           step), Adam lr 4e-4 (no scaling) with 10 warm-up epochs and cosine decay, 200
           epochs (the optimizer settings are ours); ImageNet streamed from TFDS (README "ImageNet"):
             python -m sslax.main --config=configs/cpc.py:imagenet --workdir=gs://BUCKET/cpc_in1k
  tiny     A few steps of a tiny model (a 3x3 grid of 8-pixel patches on 16-pixel crops,
           predictions 1-2 rows ahead; SGD, so that the ViT of the device-count contract test
           takes the same steps on 1 and 8 devices), for tests:
             python -m sslax.main --config=configs/cpc.py:tiny --workdir=/tmp/cpc_tiny

Evaluation (kNN, linear probe) represents an image by the backbone's mean feature over a 3x3
grid of patch-sized tiles (sslax.evaluate.features.grid_tile_size), as for the other methods
that train on patches.
"""
import ml_collections

PRESETS = ("cpu", "cifar10", "imagenet", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `cifar10`, `imagenet` or `tiny` (see the module docstring)."""
  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, context_head, imagenet_recipe, mlp_head

  preset, _ = parse_arg(arg, PRESETS, default="cpu")
  c = base_config("cpc", "cifar10" if preset == "imagenet" else preset)
  # (patch vector d, context network width, its residual blocks)
  dim, width, depth = {"cifar10": (256, 256, 5), "cpu": (128, 128, 5), "imagenet": (1024, 256, 5),
                       "tiny": (16, 16, 2)}[preset]
  steps = {"imagenet": (1, 2, 3, 4, 5), "tiny": (1, 2)}.get(preset, (1, 2, 3))
  c.augment.crop_size = 16 if preset == "tiny" else 32
  c.augment.crop_scale = (0.3, 1.0)
  c.cpc.patch_size, c.cpc.stride = 8, 4
  c.optimizer.name = "adamw"
  c.optimizer.base_learning_rate = 2e-3
  c.optimizer.lr_scaling = "none"
  c.optimizer.weight_decay = 0.0  # Adam.
  if preset == "cifar10":
    c.batch_size = 256
    c.total_epochs = 200.0
  elif preset == "cpu":
    c.batch_size = 32
    c.total_epochs = 1.0
    c.warmup_epochs = 0.05
    c.log_every_steps = 50
    c.checkpoint.every_steps = 500
    c.knn.every_steps = 0  # One kNN evaluation, at the end (the run is one epoch).
    # Half the patches colour-dropped: after 250 steps, kNN top-1 0.328 against 0.303 with all
    # of them (2,000 test images; random initialisation 0.268).
    c.cpc.colour_drop_prob = 0.5
  elif preset == "tiny":
    c.optimizer.name = "sgd"
    c.optimizer.base_learning_rate = 0.1
    c.optimizer.weight_decay = 5e-4
  elif preset == "imagenet":
    imagenet_recipe(c, epochs=200.0, batch_size=512, learning_rate=4e-4, weight_decay=0.0)
    c.augment.crop_size = 256
    c.cpc.patch_size, c.cpc.stride = 64, 32
    c.optimizer.name = "adamw"
    c.optimizer.lr_scaling = "none"
  # The colours change per patch (colour dropping) instead of per view.
  c.augment.color_jitter_prob = 0.0
  c.augment.grayscale_prob = 0.0
  c.cpc.steps = steps
  c.model.projector = mlp_head((), dim, use_bn=False)  # A linear map to the patch vectors z.
  c.model.classifier = context_head(width, depth, num_steps=len(steps))
  return c.lock()
