"""`evaluate(config, workdir)`: the evaluation protocols run against a pretraining workdir.

  python -m sslax.main --config=configs/eval.py:linear --config.pretrained_workdir=DIR --workdir=EVALDIR

Every run scores the pretrained backbone and the baselines (the same backbone randomly
initialised; raw pixels for the frozen-feature protocols; training from scratch for
fine-tuning), writes `results.json`, appends rows to a markdown results table, and
draws the plots (training curves, t-SNE of test features, nearest-neighbour retrieval).
"""
from __future__ import annotations

import json
import os
import shutil
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from sslax.data import load_dataset
from sslax.evaluate import plots
from sslax.evaluate.features import grid_tile_size
from sslax.evaluate.finetune import finetune
from sslax.evaluate.knn import knn_accuracy
from sslax.evaluate.linear import linear_probe
from sslax.evaluate.pretrained import Backbone, load_pretrained, random_backbone
from sslax.evaluate.subsets import load_or_create_subset
from sslax.models import VITS

PROTOCOLS = ("linear", "knn", "finetune", "frozen", "all")
TABLE_HEADER = ("| method | backbone | pretraining | encoder | protocol | labels | top-1 | top-5 | wall time | hardware |\n"
                "|---|---|---|---|---|---|---|---|---|---|\n")


def _hardware() -> str:
  devices = jax.devices()
  kind = devices[0].device_kind if devices[0].platform != "cpu" else f"CPU ({os.cpu_count()} cores)"
  return f"{len(devices)}x {kind}" if devices[0].platform != "cpu" else kind


def _pretraining_desc(backbone: Backbone, steps_per_epoch: int) -> str:
  return f"{backbone.step} steps ({backbone.step / max(steps_per_epoch, 1):.1f} ep)"


def _limit(images, labels, n):
  return (images, labels) if n is None else (images[:n], labels[:n])


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs `config.protocol` on `config.pretrained_workdir`'s backbone and the baselines.

  Args:
    config: from configs/eval.py.
    workdir: evaluation workdir (results.json, results.md, subsets, plots).

  Returns:
    The results dict written to results.json.
  """
  from sslax.config_utils import check_choice

  check_choice(config.protocol, PROTOCOLS, "protocol")
  if not config.pretrained_workdir:
    raise ValueError("Set --config.pretrained_workdir=DIR to the --workdir of a pretraining run.")
  backbone = load_pretrained(config.pretrained_workdir, config.step)
  if config.pool:
    if backbone.config.model.backbone not in VITS:
      raise ValueError(f"--config.pool={config.pool!r} reads a ViT's tokens; {config.pretrained_workdir!r} holds a "
                       f"{backbone.config.model.backbone}. Leave config.pool unset.")
    backbone = backbone.with_model_fields(pool=config.pool)
  from sslax.data.tabular import TABLE_SOURCES

  if backbone.config.data.source in TABLE_SOURCES:
    raise ValueError(f"{config.pretrained_workdir!r} holds a tabular encoder; these protocols are for images. "
                     f"Use sslax.evaluate.tabular.tabular_protocol (benchmarks/scarf_adult.py runs it).")
  os.makedirs(workdir, exist_ok=True)
  data_cfg = backbone.config.data
  with data_cfg.unlocked():
    if config.data_dir:
      data_cfg.data_dir = config.data_dir
    if config.train_split:
      data_cfg.train_split = config.train_split
  train = load_dataset(data_cfg, data_cfg.train_split)
  test = load_dataset(data_cfg, data_cfg.eval_split)
  num_classes = train.num_classes or int(np.asarray(train.labels).max()) + 1
  train_x, train_y = _limit(train.images, train.labels, config.max_train_examples)
  test_x, test_y = _limit(test.images, test.labels, config.max_test_examples)
  steps_per_epoch = len(train.images) // backbone.config.batch_size

  encoders = {"pretrained": backbone}
  if config.baselines:
    encoders["random-init"] = random_backbone(backbone.config, seed=config.seed)
  protocols = {"all": ("knn", "linear", "finetune"), "frozen": ("knn", "linear")}.get(config.protocol,
                                                                                    (config.protocol,))
  tile = grid_tile_size(backbone.config, config.image_size or train_x.shape[1], config.representation)
  how = "concatenation" if config.representation == "grid_concat" else "mean"
  representation = f"{how} of 3x3 tiles of {tile} px" if tile else "whole image"
  rows, results = [], {"pretrained_workdir": os.path.abspath(config.pretrained_workdir),
                       "method": backbone.config.method, "representation": representation,
                       "backbone": _backbone_desc(backbone.config) + (f", {representation}" if tile else ""),
                       "pretraining_step": backbone.step, "hardware": _hardware(), "results": []}

  def record(encoder: str, protocol: str, labels: str, top1: float, top5: float | None, seconds: float, **extra):
    entry = dict(encoder=encoder, protocol=protocol, labels=labels, top1=top1, top5=top5, time_s=seconds, **extra)
    results["results"].append(entry)
    logging.info("%-12s %-9s %-5s top-1 %.4f%s", encoder, protocol, labels, top1,
                 "" if top5 is None else f"  top-5 {top5:.4f}")
    rows.append(f"| {results['method']} | {results['backbone']} | {_pretraining_desc(backbone, steps_per_epoch)} "
                f"| {encoder} | {protocol} | {labels} | {top1:.4f} | {'' if top5 is None else f'{top5:.4f}'} "
                f"| {seconds:.0f} s | {results['hardware']} |\n")

  features = {}
  if {"knn", "linear"} & set(protocols):
    for name, enc in encoders.items():
      t0 = time.time()
      features[name] = tuple(enc.features(x, config.feature_batch_size, config.image_size,
                                          representation=config.representation) for x in (train_x, test_x)
                             ) + (time.time() - t0,)
    if config.baselines and config.raw_pixels and isinstance(train_x, np.ndarray):  # Not for streamed (ImageNet-sized) splits.
      features["raw-pixels"] = (train_x.reshape(len(train_x), -1).astype(np.float32) / 255.0,
                                test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0, 0.0)

  if "knn" in protocols:
    ks = tuple(config.knn.ks)
    for name, (ftr, fte, feat_s) in features.items():
      t0 = time.time()
      acc = knn_accuracy(ftr, train_y, fte, test_y, num_classes=num_classes, k=ks,
                         temperature=config.knn.temperature, chunk_size=config.knn.chunk_size)
      for k in ks:
        record(name, f"knn k={k}", "100%", acc[k], None, feat_s + time.time() - t0, k=k)

  if "linear" in protocols:
    for name, (ftr, fte, feat_s) in features.items():
      t0 = time.time()
      out = linear_probe(ftr, train_y, fte, test_y, num_classes=num_classes, l2_grid=tuple(config.linear.l2_grid),
                         val_fraction=config.linear.val_fraction, seed=config.seed, max_iters=config.linear.max_iters)
      record(name, "linear", "100%", out["top1"], out["top5"], feat_s + time.time() - t0, l2=out["l2"],
             val_top1={str(k): v for k, v in out["val_top1"].items()})

  if "finetune" in protocols:
    frozen = config.finetune.get("freeze_backbone", False)
    for i, fraction in enumerate(config.finetune.label_fractions):
      images, labels = labelled_subset(config, data_cfg, train, workdir, fraction)
      ft_cfg = config.finetune
      if config.finetune.get("fraction_epochs"):  # Per-fraction epochs (SimCLR: 60 for 1%, 30 for 10%).
        ft_cfg = dict_with(ft_cfg, epochs=float(config.finetune.fraction_epochs[i]))
      for name, enc in (("pretrained", backbone), ("scratch", random_backbone(backbone.config, seed=config.seed))):
        if name == "scratch" and (not config.baselines or frozen):
          continue
        out = finetune(enc, images, labels, test_x, test_y, num_classes=num_classes, cfg=ft_cfg, seed=config.seed)
        record(name, "linear (augmented)" if frozen else "finetune", f"{fraction * 100:g}%", out["top1"],
               out["top5"], out["time_s"], steps=out["steps"], train_examples=out["train_examples"])

  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  table = config.results_table or os.path.join(workdir, "results.md")
  new = not os.path.exists(table)
  with open(table, "a") as f:
    f.write((TABLE_HEADER if new else "") + "".join(rows))

  if config.plots:
    _plots(config, workdir, backbone, features, test_x, test_y, train_x)
  return results


# ImageNet's standard semi-supervised subsets (SimCLR / Chen et al. 2020) ship as TFDS datasets.
IMAGENET_SUBSETS = {0.01: "imagenet2012_subset/1pct", 0.1: "imagenet2012_subset/10pct"}


def labelled_subset(config, data_cfg, train, workdir: str, fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """The labelled images for fine-tuning on `fraction` of the labels.

  ImageNet (data.name 'imagenet2012') uses the standard TFDS subsets
  `imagenet2012_subset/1pct` and `/10pct`; any other dataset a class-balanced subset drawn
  with `finetune.subset_seed` and saved as an index file in the eval workdir.

  Returns:
    (uint8 images, int labels).
  """
  if fraction >= 1.0:
    return train.images, train.labels
  if data_cfg.name.split(":")[0] == "imagenet2012" and fraction in IMAGENET_SUBSETS:
    subset = load_dataset(dict_with(data_cfg, name=IMAGENET_SUBSETS[fraction]), "train")
    return subset.images, subset.labels
  idx = load_or_create_subset(workdir, train.labels, fraction, config.finetune.subset_seed, data_cfg.train_split)
  return train.images[idx], train.labels[idx]


def dict_with(cfg: ml_collections.ConfigDict, **updates) -> ml_collections.ConfigDict:
  """A copy of `cfg` with some fields replaced."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  out.update(updates)
  return out


def _backbone_desc(config) -> str:
  m = config.model
  if m.backbone in VITS:
    return f"{m.backbone}/{m.patch_size} ({m.get('pool', 'cls')} pool)"
  return f"{m.backbone} x{m.width_multiplier:g} ({m.stem} stem)"


def _plots(config, workdir, backbone, features, test_x, test_y, train_x):
  """training_curves.png (copied from pretraining), tsne.png and retrieval.png."""
  from sslax.metrics import plot_training_curves

  curves = plot_training_curves(config.pretrained_workdir)
  if curves:
    shutil.copy(curves, os.path.join(workdir, "training_curves.png"))
  if "pretrained" in features:
    train_f, test_f, _ = features["pretrained"]
  else:
    train_f, test_f = (backbone.features(x, config.feature_batch_size, config.image_size,
                                         representation=config.representation) for x in (train_x, test_x))
  plots.tsne_plot(test_f, test_y, os.path.join(workdir, "tsne.png"), num_points=config.plot_points, seed=config.seed,
                  title=f"t-SNE of {len(test_f[:config.plot_points])} test features ({backbone.config.method})")
  plots.retrieval_grid(train_f, train_x, test_f, test_x, os.path.join(workdir, "retrieval.png"), seed=config.seed)
