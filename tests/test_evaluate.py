"""Evaluation protocols: linear probe, label subsets, pretrained loading/export, the eval CLI."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from reference import REPO, load_config, subprocess_env
from sslax import parallel, train
from sslax.evaluate import linear, pretrained, subsets



# ----------------------------------------------------------------------------- linear probe


def _blobs(n_per_class=60, dim=16, classes=4, seed=0, spread=0.3):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(classes, dim)) * 3
  x = np.concatenate([centers[c] + spread * rng.normal(size=(n_per_class, dim)) for c in range(classes)])
  y = np.repeat(np.arange(classes), n_per_class)
  perm = rng.permutation(len(y))
  return x[perm].astype(np.float32), y[perm]


def test_linear_probe_separable_features_reach_full_accuracy():
  x, y = _blobs()
  xt, yt = _blobs(seed=0)  # Same centres, same points: separable by construction.
  out = linear.linear_probe(x, y, xt, yt, num_classes=4, l2_grid=(1e-4, 1e-2))
  assert out["top1"] == 1.0 and out["top5"] == 1.0
  assert out["l2"] in (1e-4, 1e-2) and set(out["val_top1"]) == {1e-4, 1e-2}


def test_linear_probe_on_shuffled_labels_is_at_chance():
  x, y = _blobs(n_per_class=150, classes=4)
  rng = np.random.default_rng(1)
  xt = rng.normal(size=(2000, x.shape[1])).astype(np.float32)
  yt = rng.integers(0, 4, size=2000)
  out = linear.linear_probe(x, rng.permutation(y), xt, yt, num_classes=4)
  assert abs(out["top1"] - 0.25) < 0.05


def test_logistic_regression_matches_the_optimality_condition():
  # At the optimum of mean CE + l2/2 |W|^2 the gradient vanishes: X^T (softmax - onehot)/N + l2 W = 0.
  x, y = _blobs(n_per_class=30, dim=5, classes=3, spread=2.0)
  l2 = 1e-2
  p = linear.fit_logistic_regression(x, y, 3, l2, max_iters=500)
  w, b = np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64)
  logits = x @ w + b
  prob = np.exp(logits - logits.max(1, keepdims=True))
  prob /= prob.sum(1, keepdims=True)
  resid = prob - np.eye(3)[y]
  np.testing.assert_allclose(x.T @ resid / len(y) + l2 * w, 0, atol=1e-4)
  np.testing.assert_allclose(resid.mean(0), 0, atol=1e-4)


def test_topk_accuracy():
  logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
  acc = linear.topk_accuracy(logits, np.array([1, 1, 0]), (1, 2, 3))
  assert acc == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


# ----------------------------------------------------------------------------- subsets


def test_subsets_are_class_balanced_deterministic_and_saved(tmp_path):
  labels = np.random.default_rng(0).integers(0, 10, size=5000)
  a = subsets.class_balanced_subset(labels, 0.01, seed=3)
  b = subsets.class_balanced_subset(labels, 0.01, seed=3)
  c = subsets.class_balanced_subset(labels, 0.01, seed=4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert len(a) == 50 and np.all(np.bincount(labels[a], minlength=10) == 5)
  assert len(np.unique(a)) == len(a) and np.all(np.diff(a) > 0)
  ten = subsets.class_balanced_subset(labels, 0.1, seed=3)
  assert np.all(np.bincount(labels[ten], minlength=10) == 50)
  # Written once, read back on a rerun; a file drawn from another split is refused.
  first = subsets.load_or_create_subset(str(tmp_path), labels, 0.01, 3, "train")
  np.testing.assert_array_equal(first, a)
  with open(subsets.subset_path(str(tmp_path), 0.01, 3)) as f:
    saved = json.load(f)
  assert saved["indices"] == a.tolist() and saved["split"] == "train"
  np.testing.assert_array_equal(subsets.load_or_create_subset(str(tmp_path), labels, 0.01, 3, "train"), a)
  with pytest.raises(ValueError, match="another eval workdir"):
    subsets.load_or_create_subset(str(tmp_path), labels, 0.01, 3, "train[:10%]")
  with pytest.raises(ValueError, match=r"\(0, 1\]"):
    subsets.class_balanced_subset(labels, 0.0)


def test_subset_indices_come_from_the_train_split_only(cifar_tiny_config):
  from sslax.data import load_dataset

  train_data = load_dataset(cifar_tiny_config.data, "train[:2000]")
  test_data = load_dataset(cifar_tiny_config.data, "test[:500]")
  idx = subsets.class_balanced_subset(train_data.labels, 0.05, seed=0)
  chosen = train_data.images[idx].reshape(len(idx), -1)
  test_rows = {row.tobytes() for row in test_data.images.reshape(len(test_data.images), -1)}
  assert not any(row.tobytes() in test_rows for row in chosen)
  assert idx.max() < len(train_data.labels)


# ----------------------------------------------------------------------------- pretrained backbones


def _pretrain(config, workdir, num_devices):
  with config.unlocked():
    config.knn.at_end = False
    config.total_steps = 3
    config.checkpoint.every_steps = 3
  mesh = parallel.make_mesh(jax.devices()[:num_devices])
  train.train_and_evaluate(config, workdir, mesh=mesh)


def test_eight_device_checkpoint_gives_identical_features_in_a_one_device_process(tiny_config, tmp_path):
  workdir = str(tmp_path / "pre8")
  _pretrain(tiny_config, workdir, 8)
  images = np.random.default_rng(0).integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  here = pretrained.load_pretrained(workdir)
  assert here.step == 3 and here.source == os.path.abspath(workdir)
  feats_8 = here.features(images, batch_size=16)
  # A separate process that sees a single device.
  code = ("import sys, numpy as np, sslax; b = sslax.load_pretrained(sys.argv[1]); "
          "np.save(sys.argv[3], b.features(np.load(sys.argv[2]), batch_size=16))")
  env = subprocess_env(1, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code, workdir, str(tmp_path / "images.npy"), str(tmp_path / "f1.npy")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  feats_1 = np.load(tmp_path / "f1.npy")
  np.testing.assert_allclose(feats_1, feats_8, rtol=1e-5, atol=1e-6)
  # Features come from trained weights, not from a fresh initialisation.
  random_feats = pretrained.random_backbone(here.config).features(images, batch_size=16)
  assert np.abs(random_feats - feats_8).max() > 1e-3

  # The exported backbone alone gives the same features.
  export = pretrained.export_backbone(workdir, str(tmp_path / "export"))
  reloaded = pretrained.load_pretrained(export)
  np.testing.assert_allclose(reloaded.features(images, batch_size=16), feats_8, rtol=1e-6, atol=1e-6)
  assert set(reloaded.variables) == {"params", "batch_stats"}
  assert "projector" not in reloaded.variables["params"]


def test_missing_workdir_or_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(pretrained.PretrainedError, match="does not exist"):
    pretrained.load_pretrained(str(tmp_path / "nope"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(pretrained.PretrainedError, match="no config.json"):
    pretrained.load_pretrained(str(empty))
  (empty / "config.json").write_text(json.dumps({"method": "simclr"}))
  with pytest.raises(pretrained.PretrainedError, match="holds no checkpoint"):
    pretrained.load_pretrained(str(empty))


def test_eval_cli_end_to_end(tiny_config, tmp_path):
  pre = str(tmp_path / "pre")
  _pretrain(tiny_config, pre, 2)
  evaldir = str(tmp_path / "eval")
  args = [sys.executable, "-m", "sslax.main", "--config=configs/eval.py:all", f"--config.pretrained_workdir={pre}",
          f"--workdir={evaldir}", "--config.max_train_examples=300", "--config.max_test_examples=100",
          "--config.knn.ks=(5,20)", "--config.linear.l2_grid=(1e-3,)", "--config.linear.max_iters=50",
          "--config.finetune.min_steps=2", "--config.finetune.epochs=0.1", "--config.finetune.batch_size=16",
          "--config.plot_points=100"]
  env = subprocess_env(2)
  out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  with open(os.path.join(evaldir, "results.json")) as f:
    results = json.load(f)["results"]
  got = {(r["encoder"], r["protocol"], r["labels"]) for r in results}
  for enc in ("pretrained", "random-init", "raw-pixels"):
    assert {(enc, "knn k=5", "100%"), (enc, "knn k=20", "100%"), (enc, "linear", "100%")} <= got
  for enc in ("pretrained", "scratch"):
    assert {(enc, "finetune", "1%"), (enc, "finetune", "10%")} <= got
  assert all(0.0 <= r["top1"] <= 1.0 for r in results)
  with open(os.path.join(evaldir, "results.md")) as f:
    table = f.read()
  assert table.startswith("| method |") and table.count("\n| simclr |") == len(results)
  for name in ("tsne.png", "retrieval.png", "subset_1pct_seed0.json", "subset_10pct_seed0.json"):
    assert os.path.exists(os.path.join(evaldir, name)), name
  with open(os.path.join(evaldir, "tsne.png"), "rb") as f:
    assert f.read(4) == b"\x89PNG"
  # Evaluating a workdir that does not exist is one clear error.
  bad = subprocess.run([sys.executable, "-m", "sslax.main", "--config=configs/eval.py:knn",
                        f"--config.pretrained_workdir={tmp_path / 'missing'}", f"--workdir={tmp_path / 'e2'}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "does not exist" in bad.stderr
  # A ViT's pooling override on a ResNet is one clear error naming the field.
  bad = subprocess.run([sys.executable, "-m", "sslax.main", "--config=configs/eval.py:knn", "--config.pool=mean",
                        f"--config.pretrained_workdir={pre}", f"--workdir={tmp_path / 'e3'}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "config.pool" in bad.stderr and "resnet18" in bad.stderr


def test_vit_pool_override_reads_the_mean_of_the_patch_tokens():
  """Backbone.with_model_fields(pool='mean') keeps the variables and reads the patch tokens' mean."""
  config, _ = load_config("mae")
  cls_backbone = pretrained.random_backbone(config).with_model_fields(pool="cls")
  mean_backbone = cls_backbone.with_model_fields(pool="mean")
  assert cls_backbone.config.model.pool == "cls" and mean_backbone.config.model.pool == "mean"
  images = np.random.default_rng(0).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
  tokens = cls_backbone.module.apply(cls_backbone.variables, cls_backbone.preprocess(images), train=False,
                                     return_tokens=True)
  np.testing.assert_allclose(cls_backbone.features(images, batch_size=2), tokens["cls"], atol=1e-5)
  np.testing.assert_allclose(mean_backbone.features(images, batch_size=2),
                             np.asarray(tokens["patches"]).mean(axis=1), atol=1e-5)


def test_random_init_vit_fine_tunes_like_a_loaded_one():
  """A random-init ViT has a loaded backbone's variable layout (empty BatchNorm statistics), so the
  fine-tuning protocol's from-scratch baseline runs on a BN-free backbone (it raised KeyError)."""
  from sslax.evaluate.finetune import default_finetune_config, finetune

  config, _ = load_config("mae")
  scratch = pretrained.random_backbone(config)
  assert set(scratch.variables) == {"params", "batch_stats"} and scratch.variables["batch_stats"] == {}
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
  labels = rng.integers(0, 3, size=16)
  cfg = default_finetune_config()
  cfg.update(min_steps=2, epochs=0.1, batch_size=8, image_size=16, eval_batch_size=8)
  out = finetune(scratch, images, labels, images[:8], labels[:8], num_classes=3, cfg=cfg)
  assert 0.0 <= out["top1"] <= 1.0


def test_imagenet_uses_the_standard_tfds_label_subsets(monkeypatch, tmp_path):
  import ml_collections

  from sslax.data.sources import ImageDataset
  from sslax.evaluate import run

  loaded = []

  def fake_load(data_cfg, split, **_):
    loaded.append((data_cfg.name, split))
    return ImageDataset(np.zeros((3, 4, 4, 3), np.uint8), np.arange(3, dtype=np.int32), 3, np.arange(3))

  monkeypatch.setattr(run, "load_dataset", fake_load)
  data_cfg = ml_collections.ConfigDict({"name": "imagenet2012", "source": "tfds", "train_split": "train"})
  train_data = ImageDataset(np.zeros((100, 4, 4, 3), np.uint8), np.arange(100) % 10, 10, np.arange(100))
  config = ml_collections.ConfigDict({"finetune": {"subset_seed": 0}})
  for fraction, name in ((0.01, "imagenet2012_subset/1pct"), (0.1, "imagenet2012_subset/10pct")):
    images, _ = run.labelled_subset(config, data_cfg, train_data, str(tmp_path), fraction)
    assert loaded[-1] == (name, "train") and len(images) == 3
  # Other datasets: a class-balanced subset of the training split, saved as an index file.
  data_cfg.name = "cifar10"
  images, labels = run.labelled_subset(config, data_cfg, train_data, str(tmp_path), 0.2)
  assert len(images) == 20 and np.all(np.bincount(labels) == 2)
  assert os.path.exists(subsets.subset_path(str(tmp_path), 0.2, 0))


def test_frozen_backbone_linear_protocol_changes_only_the_head(tiny_config):
  import copy

  from sslax.data import load_dataset
  from sslax.evaluate.finetune import default_finetune_config, finetune

  data = load_dataset(tiny_config.data, "train")
  backbone = pretrained.random_backbone(tiny_config)
  cfg = default_finetune_config()
  with cfg.unlocked():
    cfg.update(freeze_backbone=True, batch_size=32, image_size=16, min_steps=4, epochs=0.0, eval_batch_size=64)
    cfg.optimizer.weight_decay = 5e-2  # Would move a backbone that took part in the update.
  before = copy.deepcopy(backbone.variables)
  out = finetune(backbone, data.images[:64], data.labels[:64], data.images[64:128], data.labels[64:128],
                 num_classes=10, cfg=cfg, mesh=parallel.make_mesh(jax.devices()[:2]), return_variables=True)
  after = out["variables"]
  for a, b in zip(jax.tree.leaves((before["params"], before["batch_stats"])),
                  jax.tree.leaves((after["params"]["backbone"], after["batch_stats"]["backbone"]))):
    np.testing.assert_array_equal(a, b)
  assert np.abs(after["params"]["head"]["kernel"]).max() > 0  # The zero-initialised head was trained.
