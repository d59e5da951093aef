"""sslax.data.make_fake_imagenet: a tiny fake ImageNet prepared by TFDS's real imagenet2012 builder."""
import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from sslax.data import make_fake_imagenet as fake

NUM_TRAIN, NUM_VAL, NUM_CLASSES, MIN_SIZE, MAX_SIZE = 24, 8, 3, 40, 90


def _make(out_dir, file_format):
  return fake.make_fake_imagenet(str(out_dir), NUM_TRAIN, num_val=NUM_VAL, num_classes=NUM_CLASSES,
                                 min_size=MIN_SIZE, max_size=MAX_SIZE, file_format=file_format, seed=0)


def _check_examples(examples, split, num):
  """examples: dicts with numpy 'image', 'label', 'file_name'."""
  assert len(examples) == num
  labels = np.array([int(e["label"]) for e in examples])
  assert labels.min() >= 0 and labels.max() < NUM_CLASSES
  assert set(labels.tolist()) == set(range(NUM_CLASSES))  # Every class appears.
  shapes = {e["image"].shape for e in examples}
  assert len(shapes) > num // 2  # Varied sizes and aspect ratios.
  for h, w, c in shapes:
    assert MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE and c == 3
  synsets = fake.imagenet_synsets()
  names = [e["file_name"].decode() if isinstance(e["file_name"], bytes) else e["file_name"] for e in examples]
  if split == "train":
    for name, label in zip(names, labels):
      assert name.startswith(synsets[label] + "_") and name.endswith(".JPEG")
  else:  # The label TFDS gave each val image is the one its labels file gives the file's name.
    val_labels = fake.imagenet_validation_labels()
    for name, label in zip(names, labels):
      assert name.startswith("ILSVRC2012_val_")
      assert val_labels[int(name[len("ILSVRC2012_val_"):-len(".JPEG")]) - 1] == synsets[label]
  return labels


def test_tfrecord_tfds_load(tmp_path):
  data_dir = _make(tmp_path, "tfrecord")
  assert data_dir == str(tmp_path)
  builder = tfds.builder("imagenet2012", data_dir=data_dir)
  assert builder.is_prepared()
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": NUM_TRAIN, "validation": NUM_VAL}
  assert not any(name.startswith("fake_imagenet_manual_") for name in os.listdir(tmp_path))  # Temp dir removed.
  ds = tfds.load("imagenet2012", data_dir=data_dir, download=False)
  assert set(ds) == {"train", "validation"}
  for split, num in (("train", NUM_TRAIN), ("validation", NUM_VAL)):
    labels = _check_examples(list(tfds.as_numpy(ds[split])), split, num)
    if split == "train":
      assert np.bincount(labels).tolist() == [NUM_TRAIN // NUM_CLASSES] * NUM_CLASSES


def test_array_record_data_source(tmp_path):
  data_dir = _make(tmp_path, "array_record")
  builder = tfds.builder("imagenet2012", data_dir=data_dir)
  assert builder.info.file_format.value == "array_record"
  source = tfds.data_source("imagenet2012", split="train", data_dir=data_dir)
  assert len(source) == NUM_TRAIN
  first = source[5]  # Random access.
  _check_examples([source[i] for i in range(len(source))], "train", NUM_TRAIN)
  np.testing.assert_array_equal(source[5]["image"], first["image"])
  val = tfds.data_source("imagenet2012", split="validation", data_dir=data_dir)
  _check_examples([val[i] for i in range(len(val))], "validation", NUM_VAL)


def test_images_deterministic_and_class_dependent():
  a = fake.make_image(0, "train", 3, 1, 50, 80)
  np.testing.assert_array_equal(a, fake.make_image(0, "train", 3, 1, 50, 80))
  assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
  assert not np.array_equal(a, fake.make_image(1, "train", 3, 1, 50, 80))
  # Same seed/index (so same size and geometry), other class: different picture.
  b = fake.make_image(0, "train", 3, 2, 50, 80)
  assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="num_classes"):
    fake.make_fake_imagenet(str(tmp_path), 10, num_classes=0)
  with pytest.raises(ValueError, match="num_val must be >= 1"):
    fake.make_fake_imagenet(str(tmp_path), 10, num_val=0)
  with pytest.raises(ValueError, match="validation set has only"):
    fake.make_fake_imagenet(str(tmp_path), 10, num_val=51, num_classes=1, min_size=20, max_size=30)
