"""Streaming input: crops from the full image, batches independent of the process count, exact
resume, corrupt files, and streamed evaluation."""
import copy
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from reference import requires_cifar

from sslax import augment, parallel, train
from sslax.augment.views import _crop_key, _crop_window
from sslax.data import load_dataset, train_batches
from sslax.data.sources import use_streaming
from sslax.data.streaming import (CorruptImageError, FolderRecords, StreamingDataset, StreamingReader, decode_crops,
                                  streaming_train_batches)

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def _write_folder(root, per_class=12, classes=("ant", "bee", "cat"), seed=0):
  """JPEGs (and one PNG) of varied sizes, 40-100 px a side, in class subfolders."""
  rng = np.random.default_rng(seed)
  for c, name in enumerate(classes):
    os.makedirs(root / name, exist_ok=True)
    for i in range(per_class):
      h, w = rng.integers(40, 101, size=2)
      base = np.array([60 + 60 * c, 120, 200 - 60 * c], np.float32)
      pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
      ext = "png" if (c, i) == (0, 0) else "jpg"
      Image.fromarray(pixels).save(root / name / f"{i:03d}.{ext}", quality=90)
  return str(root)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  return _write_folder(tmp_path_factory.mktemp("folder"))


def _streaming_config(tiny_config, folder):
  config = copy.deepcopy(tiny_config)
  with config.unlocked():
    config.data.source = "folder"
    config.data.folder = folder
    config.data.eval_folder = folder
    config.data.in_memory = False
    config.data.image_size = 32  # Evaluation center crops.
    config.data.num_workers = 2
  return config


def test_host_crop_boxes_are_the_boxes_the_device_draws():
  seed, step, rows = 3, 17, np.arange(64)
  keys = augment.example_keys(seed, step, rows)
  for view in (0, 1):
    on_device = jax.jit(jax.vmap(lambda k: jnp.stack(_crop_window(_crop_key(k, view), 32, 32, SCALE, RATIO))))(keys)
    host = augment.crop_boxes(seed, step, rows, np.full(64, 32), np.full(64, 32), view=view, scale=SCALE, ratio=RATIO)
    np.testing.assert_array_equal(host, np.asarray(on_device).astype(np.int32))
  # Boxes of images of other sizes stay inside them and follow the area range.
  h, w = np.array([40, 300, 500, 90]), np.array([500, 200, 500, 90])
  boxes = augment.crop_boxes(seed, step, np.arange(4), h, w, view=0, scale=SCALE, ratio=RATIO)
  assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= h).all()
  assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= w).all()


@requires_cifar
def test_streamed_cifar10_matches_the_in_memory_path(cifar_tiny_config):
  config = copy.deepcopy(cifar_tiny_config)
  memory = load_dataset(config.data, "train[:64]")
  with config.unlocked():
    config.data.in_memory = False
  stream = load_dataset(config.data, "train[:64]")
  assert isinstance(stream, StreamingDataset) and len(stream) == 64 and stream.num_classes == 10
  # Evaluation images (the whole 32x32 image) and labels are exactly the in-memory ones.
  np.testing.assert_array_equal(np.asarray(stream.images[:64]), memory.images)
  np.testing.assert_array_equal(np.asarray(stream.labels), memory.labels)

  # A training batch: the host crops the boxes the device would crop from the in-memory image.
  cfg = config.augment
  batch = next(streaming_train_batches(stream, batch_size=16, seed=0, start_step=5, augment_cfg=cfg,
                                       num_global_views=2))[1]
  mem_batch = next(train_batches(memory, batch_size=16, seed=0, start_step=5))[1]
  np.testing.assert_array_equal(batch["index"], mem_batch["index"])
  np.testing.assert_array_equal(batch["label"], mem_batch["label"])
  keys = augment.example_keys(0, 5, np.arange(16))
  for v in (0, 1):
    device = jax.vmap(lambda im, k: augment.simclr_view(im, k, _geometry_only(cfg), v))(mem_batch["image"], keys)
    device = np.asarray(jnp.round(device * 255))
    # Flipping is done on the device, so compare against both orientations of the host crop.
    host = batch[f"view{v}"].astype(np.float32)
    diff = np.minimum(np.abs(device - host).mean(axis=(1, 2, 3)), np.abs(device - host[:, :, ::-1]).mean(axis=(1, 2, 3)))
    assert diff.max() < 6.0, diff  # Same window; PIL's and the device's resampling differ by a few levels.

  # With the whole image as the box, the pre-cropped view is the in-memory view, bit for bit.
  full = _geometry_only(cfg)
  with full.unlocked():
    full.crop_scale, full.crop_ratio, full.crop_size = (1.0, 1.0), (1.0, 1.0), 32
    full.color_jitter_prob, full.grayscale_prob = 0.8, 0.2  # Photometric keys must line up too.
  crops = np.stack([decode_crops(stream.reader.records[i].data, np.array([[0, 0, 32, 32]]), 32)[0]
                    for i in range(16)])
  from_image = jax.vmap(lambda im, k: augment.simclr_view(im, k, full, 0))(memory.images[:16], keys)
  from_crop = augment.precropped_views([crops], keys, full, num_global=1)[0]
  np.testing.assert_array_equal(np.asarray(from_image), np.asarray(from_crop))


def _geometry_only(cfg):
  out = copy.deepcopy(cfg)
  with out.unlocked():
    out.color_jitter_prob, out.grayscale_prob, out.flip_prob = 0.0, 0.0, 0.0
  return out


@pytest.mark.parametrize("path", ["streaming", "in_memory"])
def test_global_batch_is_the_same_for_1_2_4_processes_and_parts_are_disjoint(tiny_config, image_folder, path):
  config = _streaming_config(tiny_config, image_folder)
  with config.unlocked():
    config.data.in_memory = path == "in_memory"
  data = load_dataset(config.data, "train")
  n, batch, steps = len(data), 8, 4  # 36 images: 4 steps of 8 per epoch, 4 dropped.

  def batches(p, count):
    if path == "streaming":
      it = streaming_train_batches(data, batch_size=batch, seed=1, start_step=0, augment_cfg=config.augment,
                                   num_global_views=2, process_index=p, process_count=count)
    else:
      it = train_batches(data, batch_size=batch, seed=1, start_step=0, process_index=p, process_count=count)
    return [next(it)[1] for _ in range(steps + 1)]  # One epoch and the first step of the next.

  reference = batches(0, 1)
  fields = ("view0", "view1", "label", "index") if path == "streaming" else ("image", "label", "index")
  for count in (2, 4):
    parts = [batches(p, count) for p in range(count)]
    for s in range(steps + 1):
      for f in fields:
        np.testing.assert_array_equal(np.concatenate([part[s][f] for part in parts]), reference[s][f])
      seen = [set(part[s]["index"].tolist()) for part in parts]
      assert sum(len(x) for x in seen) == batch and len(set().union(*seen)) == batch  # Disjoint.
  epoch = np.concatenate([b["index"] for b in reference[:steps]])
  assert len(set(epoch.tolist())) == steps * batch and set(epoch.tolist()) <= set(range(n))


def test_streaming_resume_is_bitwise_identical_to_an_uninterrupted_run(tiny_config, image_folder, tmp_path):
  from reference import restore_train_state

  config = _streaming_config(tiny_config, image_folder)
  with config.unlocked():
    config.knn.every_steps, config.knn.at_end = 0, False
    config.online_probe.enabled = False  # restore_train_state assumes 10 classes; these images have 3.
    config.total_steps = 4
  mesh = parallel.make_mesh(jax.devices()[:2])
  full, parts = str(tmp_path / "full"), str(tmp_path / "parts")
  assert train.train_and_evaluate(copy.deepcopy(config), full, mesh=mesh)["step"] == 4
  stopped = copy.deepcopy(config)
  with stopped.unlocked():
    stopped.stop_at_step = 2
  assert train.train_and_evaluate(stopped, parts, mesh=mesh)["step"] == 2
  assert train.train_and_evaluate(copy.deepcopy(config), parts, mesh=mesh)["step"] == 4
  a, b = restore_train_state(config, full), restore_train_state(config, parts)
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state, a.batch_stats)),
                  jax.tree.leaves((b.params, b.opt_state, b.batch_stats))):
    np.testing.assert_array_equal(x, y)


def test_corrupt_images_are_skipped_with_one_warning_or_a_clear_error(tmp_path, caplog):
  folder = _write_folder(tmp_path / "data", per_class=4, classes=("a",))
  bad = os.path.join(folder, "a", "001.jpg")
  with open(bad, "rb") as f:
    data = f.read()
  with open(bad, "wb") as f:
    f.write(data[:len(data) // 3])  # Truncated: the header parses, the pixels do not.
  with open(os.path.join(folder, "a", "002.jpg"), "wb") as f:
    f.write(b"not an image at all")
  records = FolderRecords(folder)

  def boxes(rows, heights, widths):
    return [np.stack([np.zeros_like(heights), np.zeros_like(widths), heights, widths], axis=1)]

  reader = StreamingReader(records, num_workers=2, on_corrupt="skip")
  with caplog.at_level(logging.WARNING):
    views, labels = reader.random_crops(np.arange(4), boxes, [16])
    reader.random_crops(np.arange(4), boxes, [16])  # Warned once per file, not per read.
  warnings = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
  assert len(warnings) == 2 and any("001.jpg" in w for w in warnings) and any("002.jpg" in w for w in warnings)
  # Skipped rows hold the next decodable image (003), so the batch stays full and deterministic.
  assert views[0].shape == (4, 16, 16, 3)
  np.testing.assert_array_equal(views[0][1], views[0][3])
  np.testing.assert_array_equal(views[0][2], views[0][3])

  strict = StreamingReader(records, num_workers=2, on_corrupt="error")
  with pytest.raises(CorruptImageError, match="002.jpg.*on_corrupt=skip"):
    strict.center_crops(np.array([2]), 16)
  with pytest.raises(CorruptImageError, match="001.jpg"):
    strict.random_crops(np.array([0, 1]), boxes, [16])


def test_streamed_evaluation_reads_batch_by_batch(tiny_config, image_folder):
  from sslax.evaluate.features import extract_features

  config = _streaming_config(tiny_config, image_folder)
  data = load_dataset(config.data, "train")
  mesh = parallel.make_mesh(jax.devices()[:2])
  calls = []
  feature_fn = jax.jit(lambda _, x: x.reshape(x.shape[0], -1)[:, :5].astype(jnp.float32))
  original = data.reader.center_crops
  data.reader.center_crops = lambda idx, *a, **k: calls.append(len(idx)) or original(idx, *a, **k)
  streamed = extract_features(feature_fn, None, data.images, 8, mesh)
  assert max(calls) <= 8 and sum(calls) == len(data)  # Never more than one batch decoded at once.
  data.reader.center_crops = original
  np.testing.assert_array_equal(streamed, extract_features(feature_fn, None, np.asarray(data.images), 8, mesh))


def test_in_memory_none_streams_only_above_the_size_limit(tiny_config, image_folder):
  config = _streaming_config(tiny_config, image_folder)
  with config.unlocked():
    config.data.in_memory = None
  assert not use_streaming(config.data, "train")  # 36 images of 32x32.
  with config.unlocked():
    config.data.max_in_memory_gb = 1e-5
  assert use_streaming(config.data, "train")


def test_streamed_multicrop_local_views_are_cropped_from_the_full_image_too(tiny_config, image_folder):
  config = _streaming_config(tiny_config, image_folder)
  with config.unlocked():
    config.augment.num_local_crops, config.augment.local_crop_size = 2, 8
    config.augment.local_crop_scale = (0.05, 0.4)
  data = load_dataset(config.data, "train")
  step, batch = next(streaming_train_batches(data, batch_size=8, seed=2, start_step=3, augment_cfg=config.augment,
                                             num_global_views=2))
  assert [batch[k].shape for k in ("view0", "view1", "local0", "local1")] == [(8, 16, 16, 3)] * 2 + [(8, 8, 8, 3)] * 2
  # Local view j is view 2 + j of the example's key, with the local area range.
  record = data.reader.records[int(batch["index"][0])]
  from sslax.data.streaming import image_shape

  h, w = image_shape(record.data)
  box = augment.crop_boxes(2, 3, np.array([0]), np.array([h]), np.array([w]), view=3, scale=(0.05, 0.4), ratio=RATIO)
  np.testing.assert_array_equal(batch["local1"][0], decode_crops(record.data, box, 8)[0])
  assert box[0, 2] * box[0, 3] <= 0.4 * h * w + h + w
