r"""Evaluation protocols against a pretraining workdir (any method).

Presets (`--config=configs/eval.py:PRESET`), each also scoring the baselines (random-init
backbone; raw pixels for kNN/linear; training from scratch for fine-tuning):
  knn       weighted kNN on L2-normalised frozen features (k = 20 and 200, T = 0.1):
              python -m sslax.main --config=configs/eval.py:knn \
                  --config.pretrained_workdir=workdirs/simclr_cpu --workdir=workdirs/simclr_cpu_eval
  linear    frozen-feature linear probe (L-BFGS softmax regression, L2 chosen on 10% held out):
              python -m sslax.main --config=configs/eval.py:linear \
                  --config.pretrained_workdir=workdirs/simclr_cpu --workdir=workdirs/simclr_cpu_eval
  finetune  fine-tune backbone + new head on class-balanced 1% and 10% label subsets:
              python -m sslax.main --config=configs/eval.py:finetune \
                  --config.pretrained_workdir=workdirs/simclr_cpu --workdir=workdirs/simclr_cpu_eval
  frozen    kNN and linear probe on one extraction of the frozen features.
  all       (default) the three above.
  imagenet_linear  ImageNet's standard linear protocol (SimCLR appendix B.6): a linear head on the
            frozen backbone (BN in inference mode) trained 90 epochs with SGD + Nesterov momentum
            0.9, batch 4096, lr 0.1 x batch/256, no weight decay, on random resized crops (area
            0.08-1, from the full streamed image) + flips of the whole train split; scored on
            the validation split's central 224x224 crop (resize 256, crop 224).
  imagenet_semi    Semi-supervised fine-tuning on ImageNet's standard 1% and 10% subsets (TFDS
            `imagenet2012_subset/1pct` and `/10pct`, prepared like imagenet2012), SimCLR appendix
            B.5: SGD + Nesterov, batch 4096, lr 0.05 x batch/256, no warm-up or weight decay,
            60 epochs for 1% and 30 for 10%, random crops + flips.

Outputs in --workdir: results.json, results.md (one row per encoder and protocol; rows are
appended, so one table can collect many runs: --config.results_table=PATH), the label
subsets as JSON index files, training_curves.png, tsne.png and retrieval.png.
"""
import ml_collections
from ml_collections import config_dict

PRESETS = ("all", "knn", "linear", "finetune", "frozen", "imagenet_linear", "imagenet_semi")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked evaluation config of a preset (see the module docstring)."""
  from sslax import host
  from sslax.config_utils import parse_arg
  from sslax.evaluate.finetune import default_finetune_config

  preset, _ = parse_arg(arg, PRESETS, default="all")
  c = ml_collections.ConfigDict()
  c.protocol = preset
  c.pretrained_workdir = ""  # Required: the --workdir of a pretraining run (or an exported backbone).
  c.step = config_dict.placeholder(int)  # Checkpoint step (None: latest).
  c.data_dir = config_dict.placeholder(str)  # Overrides the pretraining config's data.data_dir.
  # Overrides the pretraining config's data.train_split (the labelled training set of every
  # protocol), e.g. the full split after pretraining on a subset (Exemplar-CNN's cpu preset).
  c.train_split = config_dict.placeholder(str)
  c.seed = 0
  c.baselines = True
  c.raw_pixels = True  # With baselines: also kNN and linear probe on raw pixels (slow to probe: 3,072-d).
  c.image_size = config_dict.placeholder(int)  # Evaluation resolution (None: stored size).
  # Frozen features (kNN, linear): 'image', 'grid' (the mean over the 3x3 grid tiles),
  # 'grid_concat' (their concatenation in raster order, keeping the layout) or 'auto'
  # (the grid for backbones trained on tiles: jigsaw, relative patch location).
  c.representation = "auto"
  # ViT backbones: read the class token ('cls') or the mean of the patch tokens ('mean') instead of
  # the pretraining config's model.pool (None: as pretrained). The random-init baseline follows.
  c.pool = config_dict.placeholder(str)
  c.feature_batch_size = 500
  host.add_config_fields(c)  # cpu_devices, cpu_malloc, cpu_hugepages
  c.max_train_examples = config_dict.placeholder(int)  # None: the whole training split.
  c.max_test_examples = config_dict.placeholder(int)
  c.results_table = ""  # Markdown table to append to ('' = <workdir>/results.md).
  c.plots = True
  c.plot_points = 2000

  c.knn = ml_collections.ConfigDict()
  c.knn.ks = (20, 200)
  c.knn.temperature = 0.1
  c.knn.chunk_size = 256

  c.linear = ml_collections.ConfigDict()
  c.linear.l2_grid = (1e-5, 1e-4, 1e-3, 1e-2)
  c.linear.val_fraction = 0.1
  c.linear.max_iters = 300

  c.finetune = default_finetune_config()
  if preset.startswith("imagenet"):
    c.protocol = "finetune"
    c.baselines = False  # A random-init ImageNet baseline costs a second full run; enable if wanted.
    c.plots = False
    c.max_test_examples = None
    ft = c.finetune
    ft.batch_size, ft.image_size, ft.crop_scale, ft.min_steps, ft.warmup_fraction = 4096, 224, (0.08, 1.0), 0, 0.0
    ft.eval_batch_size = 1024
    ft.optimizer.update(name="sgd", lr_scaling="linear", weight_decay=0.0, momentum=0.9, nesterov=True)
    if preset == "imagenet_linear":
      ft.freeze_backbone, ft.label_fractions, ft.epochs = True, (1.0,), 90.0
      ft.optimizer.base_learning_rate = 0.1
    else:
      ft.label_fractions, ft.fraction_epochs, ft.epochs = (0.01, 0.1), (60.0, 30.0), 30.0
      ft.optimizer.base_learning_rate = 0.05
  return c.lock()
