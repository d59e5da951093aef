r"""Writes a PNG grid of original images and their augmented views, to see what a config does.

  python -m sslax.augment.preview --config=configs/simclr.py --out=views.png [--num_images=8]
      [--num_views=4] [--config.augment.crop_size=32 ...]

Each row is one training image: the original first, then `num_views` views made by the
same per-example functions (and the same keys) that the train step uses at `--step`.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sslax.augment.grid import view_grid  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/simclr.py:cpu.",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", "augmentations.png", "Output PNG path.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 8, "Training images (rows).")
_NUM_VIEWS = flags.DEFINE_integer("num_views", 4, "Augmented views per image (columns after the original).")
_STEP = flags.DEFINE_integer("step", 0, "Training step whose keys are used.")
_SCALE = flags.DEFINE_integer("scale", 4, "Nearest-neighbour upscaling of every cell, for small images.")
flags.mark_flags_as_required(["config"])


def write_preview(config, out: str, num_images: int = 8, num_views: int = 4, step: int = 0,
                  scale: int = 4) -> str:
  """Augments the first `num_images` training images of the config's dataset and writes the grid.

  Args:
    config: a method config (its data and augment fields are used).
    out: PNG path to write.
    num_images: rows.
    num_views: views per image.
    step: training step whose per-example keys are used.
    scale: upscaling of every cell.

  Returns:
    The path written.
  """
  import jax
  from PIL import Image

  from sslax import augment
  from sslax.data import load_dataset

  split = config.data.train_split
  if config.data.source == "tfds" and "[" not in split:
    split = f"{split}[:{num_images}]"  # Read only the rows shown.
  data = load_dataset(config.data, split=split)
  images = data.images[:num_images]
  keys = augment.example_keys(config.seed, step, np.arange(images.shape[0]))
  views = jax.jit(lambda x, k: augment.simclr_views(x, k, config.augment, num_views=num_views))(images, keys)
  grid = view_grid(images, [np.asarray(v) for v in views], scale=scale)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  Image.fromarray(grid).save(out)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  path = write_preview(_CONFIG.value, _OUT.value, _NUM_IMAGES.value, _NUM_VIEWS.value, _STEP.value, _SCALE.value)
  print(f"Wrote {path}")


if __name__ == "__main__":
  app.run(main)
