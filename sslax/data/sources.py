"""Dataset sources: TFDS datasets read offline, or a user's folder of images.

Both return decoded uint8 images of one fixed size held in host memory, which is what
small and medium datasets (CIFAR, STL-10, a folder of a few hundred thousand small
images) want: index-based sampling is then exact, fast and resumable at any step.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DatasetNotFoundError(FileNotFoundError):
  """The requested dataset is not on disk (sslax never downloads at run time)."""


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """Decoded images in host memory.

  Attributes:
    images: uint8 (N, H, W, 3).
    labels: int32 (N,), -1 where unknown.
    num_classes: number of label classes (0 if unlabelled).
    indices: int64 (N,) position of each example in the full split, so subsets and
      per-process parts can be traced back.
    captions: int32 (N, C, L) byte tokens of up to C captions per image (each image's
      captions cycled to C), or None; read with data.captions / data.caption_feature.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  indices: np.ndarray
  captions: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def inputs(self) -> np.ndarray:
    """What the model reads of every example (the images)."""
    return self.images

  def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """{'image', 'label', 'index'} (and 'caption' tokens) of the examples `idx`."""
    rows = {"image": self.images[idx], "label": self.labels[idx], "index": self.indices[idx].astype(np.int32)}
    if self.captions is not None:
      rows["caption"] = self.captions[idx]
    return rows

  def batch_rows(self, idx: np.ndarray, *, seed: int, step: int, global_batch: int, first: int) -> dict[str, np.ndarray]:
    """The training batch of the examples `idx` (rows first..first+len(idx) of step `step`'s
    global batch): their rows; images need nothing else (their views are made on device)."""
    del seed, step, global_batch, first
    return self.rows(idx)


def caption_tokens(captions: Sequence[Sequence[str]], max_captions: int, max_len: int) -> np.ndarray:
  """int32 (N, max_captions, max_len) byte tokens (sslax.models.text.tokenize) of each image's
  captions, the first max_captions of them, cycled when an image has fewer."""
  from sslax.models.text import tokenize

  flat = [caps[i % len(caps)] for caps in captions for i in range(max_captions)]
  return tokenize(flat, max_len).reshape(len(captions), max_captions, max_len)


def read_folder_captions(files: Sequence[str], directory: str, spec: str) -> list[list[str]]:
  """Each image's captions: spec 'txt' reads `<image stem>.txt` beside it (one caption per
  line); any other spec is a CSV file with a header row naming 'path' and 'caption' columns
  (paths relative to `directory` or absolute; several rows per image give several captions).

  Raises:
    DatasetNotFoundError: a caption file, or an image's caption, is missing (names it).
  """
  if spec == "txt":
    out = []
    for path in files:
      txt = os.path.splitext(path)[0] + ".txt"
      if not os.path.isfile(txt):
        raise DatasetNotFoundError(f"No caption file {txt!r} for image {path!r}: data.captions='txt' reads the "
                                   f"captions of each image from a .txt file beside it, one per line.")
      with open(txt, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
      if not lines:
        raise DatasetNotFoundError(f"Caption file {txt!r} is empty; write at least one caption line.")
      out.append(lines)
    return out
  import csv

  if not os.path.isfile(spec):
    raise DatasetNotFoundError(f"Caption file {spec!r} (data.captions) does not exist; give 'txt' or a CSV "
                               f"file with a header row 'path,caption'.")
  by_path: dict[str, list[str]] = {}
  with open(spec, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    if not reader.fieldnames or not {"path", "caption"} <= {n.strip() for n in reader.fieldnames}:
      raise DatasetNotFoundError(f"Caption file {spec!r} needs a header row with 'path' and 'caption' columns; "
                                 f"it has {reader.fieldnames}.")
    for row in reader:
      row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
      path = os.path.normpath(os.path.join(directory, row["path"]))
      by_path.setdefault(path, []).append(row["caption"])
  out = []
  for path in files:
    caps = [c for c in by_path.get(os.path.normpath(path), []) if c]
    if not caps:
      raise DatasetNotFoundError(f"Image {path!r} has no caption in {spec!r} (data.captions); add a row "
                                 f"'{os.path.relpath(path, directory)},<caption>' or remove the image.")
    out.append(caps)
  return out


def default_data_dir(data_dir: str | None) -> str | None:
  """The config's data_dir, else $TFDS_DATA_DIR, else None (TFDS's own default)."""
  return data_dir or os.environ.get("TFDS_DATA_DIR") or None


def _resize_center_crop_tf(image, size: int, fraction: float = 1.0):
  import tensorflow as tf  # Imported lazily: only data loading needs TensorFlow.

  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  if fraction != 1.0:  # Central square of `fraction` of the shorter side first (ImageNet's 224/256).
    side = tf.maximum(1, tf.cast(tf.round(tf.cast(tf.minimum(h, w), tf.float32) * fraction), tf.int32))
    image = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    h, w = side, side
  scale = tf.cast(size, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
  new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
  new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
  image = tf.image.resize(image, (new_h, new_w), method="bicubic", antialias=True)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  image = image[top:top + size, left:left + size]
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def load_tfds(name: str, split: str, *, data_dir: str | None = None, image_size: int | None = None,
              process_index: int = 0, process_count: int = 1, center_crop_fraction: float = 1.0,
              caption_feature: str = "", max_captions: int = 5, caption_max_len: int = 64) -> ImageDataset:
  """Loads (this process's part of) a TFDS split into memory, offline.

  Args:
    name: TFDS dataset name, e.g. 'cifar10' (optionally with a version 'cifar10:3.0.2').
    split: split name or slice, e.g. 'train', 'test', 'train[:90%]'.
    data_dir: directory holding prepared TFDS datasets (default $TFDS_DATA_DIR).
    image_size: if set, resize the shorter side to it and center-crop a square (needed
      for datasets whose images differ in size); None keeps the stored size.
    process_index, process_count: each process loads the part
      `tfds.even_splits(split, process_count)[process_index]`.
    center_crop_fraction: with image_size, first keep the central square of this fraction of
      the shorter side (0.875: ImageNet's resize-256-crop-224).
    caption_feature: a text feature, '/' for nesting (coco_captions: 'captions/text'), read as
      each image's captions (a string or a sequence of them); '' reads none.
    max_captions, caption_max_len: captions kept per image (cycled when fewer) and tokens each.

  Returns:
    ImageDataset.

  Raises:
    DatasetNotFoundError: when the prepared dataset is not under data_dir.
  """
  import tensorflow as tf
  import tensorflow_datasets as tfds

  builder = tfds_builder(name, data_dir)
  if str(getattr(builder.info.file_format, "value", builder.info.file_format)) == "array_record":
    # tf.data cannot read ArrayRecord files; decode through the streaming reader instead.
    if caption_feature:
      raise ValueError(f"{name!r} is stored as ArrayRecord, whose captions sslax does not read yet; "
                       f"prepare it as TFRecord (tfds build --file_format=tfrecord) to use data.caption_feature.")
    return _load_array_record(builder, name, split, data_dir, image_size, process_index, process_count,
                              center_crop_fraction)
  part = tfds.even_splits(split, n=process_count)[process_index] if process_count > 1 else split
  ds = builder.as_dataset(split=part, shuffle_files=False, read_config=tfds.ReadConfig(add_tfds_id=False))
  total = builder.info.splits[part].num_examples
  first = _split_start(builder, split, process_index, process_count)
  label_feature = builder.info.features["label"] if "label" in builder.info.features else None
  num_classes = int(label_feature.num_classes) if label_feature is not None else 0

  def prepare(example):
    image = example["image"]
    if image_size is not None:
      image = _resize_center_crop_tf(image, image_size, center_crop_fraction)
    if image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    label = tf.cast(example["label"], tf.int32) if label_feature is not None else tf.constant(-1, tf.int32)
    if not caption_feature:
      return image, label, tf.constant([""])
    text = example
    for part in caption_feature.split("/"):
      text = text[part]
    text = tf.reshape(text, [-1])  # One caption or a sequence of them.
    return image, label, tf.gather(text, tf.range(max_captions) % tf.maximum(tf.shape(text)[0], 1))

  if caption_feature and caption_feature.split("/")[0] not in builder.info.features:
    raise DatasetNotFoundError(f"{name!r} has no feature {caption_feature!r} (data.caption_feature); its features "
                               f"are: {', '.join(builder.info.features)}.")
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
  images, labels, captions = [], [], []
  for batch_images, batch_labels, batch_captions in tfds.as_numpy(ds):
    images.append(batch_images)
    labels.append(batch_labels)
    if caption_feature:
      captions += [[c.decode("utf-8") for c in row] for row in batch_captions]
  if not images:
    raise DatasetNotFoundError(_missing_message(name, builder.data_dir, f"split {part!r} is empty"))
  images = np.concatenate(images)
  labels = np.concatenate(labels).astype(np.int32)
  assert len(images) == total, (len(images), total)
  return ImageDataset(images=images, labels=labels, num_classes=num_classes,
                      indices=np.arange(first, first + len(images), dtype=np.int64),
                      captions=caption_tokens(captions, max_captions, caption_max_len) if caption_feature else None)


def _load_array_record(builder, name, split, data_dir, image_size, process_index, process_count,
                       center_crop_fraction) -> ImageDataset:
  """load_tfds for datasets prepared as ArrayRecord: every image decoded by the streaming
  reader (the central square, resized to image_size with PIL's antialiased bilinear filter)."""
  import tensorflow_datasets as tfds

  from sslax.data.streaming import StreamingReader, TfdsRecords

  part = tfds.even_splits(split, n=process_count)[process_index] if process_count > 1 else split
  records = TfdsRecords(name, part, data_dir)
  size = image_size or records.shape[0]
  if size is None:
    raise ValueError(f"{records.description} has images of different sizes: set --config.data.image_size.")
  images, labels = StreamingReader(records).center_crops(np.arange(len(records)), size, center_crop_fraction)
  first = _split_start(builder, split, process_index, process_count)
  return ImageDataset(images=images, labels=labels, num_classes=records.num_classes,
                      indices=np.arange(first, first + len(images), dtype=np.int64))


def tfds_builder(name: str, data_dir: str | None = None):
  """The prepared TFDS builder of `name` under data_dir (default $TFDS_DATA_DIR), offline.

  Raises:
    DatasetNotFoundError: the dataset is unknown or not prepared there.
  """
  return _prepared_builder(name, default_data_dir(data_dir))


@functools.lru_cache(maxsize=16)
def _prepared_builder(name: str, data_dir: str | None):
  # Cached: deciding whether to stream, loading, and the kNN monitor's eval split all ask for
  # the same builder, and each construction reads the dataset's metadata from disk.
  import tensorflow as tf
  import tensorflow_datasets as tfds

  tf.config.set_visible_devices([], "GPU")  # tf.data must not take accelerator memory.
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  except Exception as e:  # tfds raises several types for unknown names / bad dirs.
    raise DatasetNotFoundError(_missing_message(name, data_dir, str(e))) from e
  if not prepared:
    raise DatasetNotFoundError(_missing_message(name, data_dir, f"no prepared data at {builder.data_dir}"))
  return builder


def _split_start(builder, split: str, process_index: int, process_count: int) -> int:
  """Offset of this process's part inside `split` (even_splits parts are contiguous, in order)."""
  if process_count == 1:
    return 0
  import tensorflow_datasets as tfds

  parts = tfds.even_splits(split, n=process_count)[:process_index]
  return sum(builder.info.splits[p].num_examples for p in parts)


def _missing_message(name: str, data_dir: str | None, detail: str) -> str:
  searched = data_dir or "~/tensorflow_datasets (TFDS default)"
  return (f"Dataset {name!r} was not found in {searched} ({detail}). sslax never downloads data at run time: "
          f"prepare it with `tfds build {name.split(':')[0]} --data_dir=DIR` on a machine with internet access "
          f"(or copy a prepared copy there), then point sslax at it with TFDS_DATA_DIR=DIR or "
          f"--config.data.data_dir=DIR.")


def load_image_folder(directory: str, *, image_size: int, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                      process_index: int = 0, process_count: int = 1, captions: str = "", max_captions: int = 5,
                      caption_max_len: int = 64) -> ImageDataset:
  """Loads a folder of images: `DIR/<class>/*.jpg` (labelled) or `DIR/*.jpg` (unlabelled).

  Images are converted to RGB, their shorter side resized to `image_size` and center-cropped
  to a square. Files are sorted so every process sees the same order; process p keeps
  every example whose position modulo process_count is p.

  Args:
    directory: the folder.
    image_size: side of the stored square images.
    extensions: file endings that count as images (case-insensitive).
    process_index, process_count: this process's part.
    captions: '' (none), 'txt' (`<image stem>.txt` beside each image) or a CSV file of
      (path, caption) rows; see read_folder_captions.
    max_captions, caption_max_len: captions kept per image (cycled when fewer) and tokens each.

  Returns:
    ImageDataset; labels are class-folder indices in sorted order, or -1 without subfolders.

  Raises:
    DatasetNotFoundError: the folder does not exist or holds no images.
  """
  from PIL import Image

  files, file_labels, num_classes = list_image_files(directory, extensions)
  positions = np.arange(len(files))[process_index::process_count]
  images = np.empty((len(positions), image_size, image_size, 3), np.uint8)
  labels = np.empty((len(positions),), np.int32)
  for out, pos in enumerate(positions):
    path, label = files[pos], file_labels[pos]
    with Image.open(path) as img:
      img = img.convert("RGB")
      scale = image_size / min(img.size)
      w, h = max(image_size, round(img.size[0] * scale)), max(image_size, round(img.size[1] * scale))
      img = img.resize((w, h), Image.BICUBIC)
      left, top = (w - image_size) // 2, (h - image_size) // 2
      images[out] = np.asarray(img.crop((left, top, left + image_size, top + image_size)))
    labels[out] = label
  tokens = None
  if captions:
    texts = read_folder_captions([files[p] for p in positions], directory, captions)
    tokens = caption_tokens(texts, max_captions, caption_max_len)
  return ImageDataset(images=images, labels=labels, num_classes=num_classes, indices=positions.astype(np.int64),
                      captions=tokens)


def list_image_files(directory: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> tuple[list[str], np.ndarray, int]:
  """The images of `DIR/<class>/**` (labelled by sorted class folder) and `DIR/*` (label -1), sorted.

  Returns:
    (paths, int32 labels, number of class folders).

  Raises:
    DatasetNotFoundError: the folder does not exist or holds no images.
  """
  if not os.path.isdir(directory):
    raise DatasetNotFoundError(f"Image folder {directory!r} does not exist. Point --config.data.folder at a "
                               f"directory of images (optionally one subfolder per class).")
  exts = tuple(e.lower() for e in extensions)
  classes = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
  files: list[tuple[str, int]] = []
  for label, cls in enumerate(classes):
    for root, _, names in sorted(os.walk(os.path.join(directory, cls))):
      files += [(os.path.join(root, n), label) for n in sorted(names) if n.lower().endswith(exts)]
  files += [(os.path.join(directory, n), -1) for n in sorted(os.listdir(directory))
            if n.lower().endswith(exts) and os.path.isfile(os.path.join(directory, n))]
  if not files:
    raise DatasetNotFoundError(f"No images ({', '.join(exts)}) found in {directory!r} or its class subfolders.")
  return [f for f, _ in files], np.asarray([label for _, label in files], np.int32), len(classes)


def synthetic_dataset(num_examples: int, *, image_size: int = 32, num_classes: int = 10, seed: int = 0,
                      split: str = "train", process_index: int = 0, process_count: int = 1) -> ImageDataset:
  """Deterministic random images and labels, made with NumPy alone (no files, no TensorFlow).

  Each class has a fixed blocky colour template (shared by every split); an example is its
  class's template with a random brightness shift and strong pixel noise, so the classes are
  separable but not trivially (raw-pixel 20-NN top-1 about 0.6 at 32x32 with 10 classes),
  and a kNN monitor or a probe has something to find. Example
  i of a split is a function of (seed, split, i) only, so every process count yields the
  same examples.

  Args:
    num_examples: size of the split (all processes).
    image_size: images are (image_size, image_size, 3) uint8.
    num_classes: labels are in [0, num_classes).
    seed: data seed.
    split: 'train' or another name (a different stream of examples).
    process_index, process_count: this process loads the process_index-th of
      process_count contiguous parts.

  Returns:
    ImageDataset.
  """
  if num_examples <= 0 or image_size <= 0 or num_classes <= 0:
    raise ValueError(f"Synthetic data needs positive sizes; got num_examples={num_examples}, "
                     f"image_size={image_size}, num_classes={num_classes} (config.data.synthetic).")
  cells = max(1, image_size // 8)
  templates = np.random.default_rng([seed, 0]).uniform(110, 145, size=(num_classes, cells, cells, 3))
  reps = -(-image_size // cells)
  templates = np.repeat(np.repeat(templates, reps, axis=1), reps, axis=2)[:, :image_size, :image_size]
  split_id = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little") % (2**31)
  positions = np.array_split(np.arange(num_examples), process_count)[process_index]
  images = np.empty((len(positions), image_size, image_size, 3), np.uint8)
  labels = np.empty((len(positions),), np.int32)
  for out, i in enumerate(positions):
    rng = np.random.default_rng([seed, 1, split_id, int(i)])
    labels[out] = rng.integers(num_classes)
    noisy = templates[labels[out]] + rng.normal(0, 25) + rng.normal(0, 60, size=templates.shape[1:])
    images[out] = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
  return ImageDataset(images=images, labels=labels, num_classes=num_classes, indices=positions.astype(np.int64))


def folder_for_split(data_cfg, split: str) -> str:
  """data.folder for the training split, data.eval_folder for any other."""
  folder = data_cfg.folder if split == data_cfg.train_split else data_cfg.get("eval_folder")
  if not folder:
    raise DatasetNotFoundError(f"No folder for split {split!r}: set --config.data.eval_folder "
                               f"(or disable the kNN monitor with --config.knn.every_steps=0).")
  return folder


def use_streaming(data_cfg, split: str) -> bool:
  """Whether `split` streams from disk (data.in_memory False, or None and too big for memory).

  With data.in_memory=None the decoded split's size (examples x image_size^2 x 3 bytes, 256 px
  assumed for datasets of varied image sizes without data.image_size) is compared with
  data.max_in_memory_gb.
  """
  in_memory = data_cfg.get("in_memory", True)
  if in_memory is not None or data_cfg.source not in ("tfds", "folder"):
    return in_memory is False
  if data_cfg.source == "tfds":
    builder = tfds_builder(data_cfg.name, data_cfg.data_dir)
    count = builder.info.splits[split].num_examples
    side = data_cfg.image_size or builder.info.features["image"].shape[0] or 256
  else:
    count = len(list_image_files(folder_for_split(data_cfg, split))[0])
    side = data_cfg.image_size or 256
  return count * side * side * 3 > data_cfg.get("max_in_memory_gb", 16.0) * 2**30


def load_dataset(data_cfg, split: str, *, process_index: int = 0, process_count: int = 1):
  """Loads `split` of the dataset described by `data_cfg` (source 'tfds', 'folder', 'synthetic',
  or a table: 'csv', 'sklearn', see sslax.data.tabular).

  Args:
    data_cfg: config with `source`, `name`, `data_dir`, `image_size`, `folder`, `synthetic`,
      and `in_memory` (True, False: stream, None: by size; see use_streaming).
    split: a TFDS split; for folders, the train split reads `folder` and any other `eval_folder`.
    process_index, process_count: which part this process loads (in-memory sources).

  Returns:
    ImageDataset, or a StreamingDataset (sslax.data.streaming) whose images and labels are
    decoded on demand when the split streams, or a TableDataset (sslax.data.tabular).
  """
  from sslax.data.tabular import TABLE_SOURCES, load_table

  if data_cfg.source in TABLE_SOURCES:
    return load_table(data_cfg, split)
  captions = {"max_captions": data_cfg.get("max_captions", 5), "caption_max_len": data_cfg.get("caption_max_len", 64)}
  if use_streaming(data_cfg, split):
    if data_cfg.get("captions") or data_cfg.get("caption_feature"):
      raise ValueError("Captions are read by the in-memory input only: set --config.data.in_memory=True "
                       "(or drop data.captions / data.caption_feature).")
    from sslax.data.streaming import open_streaming

    return open_streaming(data_cfg, split)
  if data_cfg.source == "tfds":
    return load_tfds(data_cfg.name, split, data_dir=data_cfg.data_dir, image_size=data_cfg.image_size,
                     process_index=process_index, process_count=process_count,
                     center_crop_fraction=data_cfg.get("center_crop_fraction", 1.0),
                     caption_feature=data_cfg.get("caption_feature", ""), **captions)
  if data_cfg.source == "folder":
    return load_image_folder(folder_for_split(data_cfg, split), image_size=data_cfg.image_size or 32,
                             process_index=process_index, process_count=process_count,
                             captions=data_cfg.get("captions", ""), **captions)
  if data_cfg.source == "synthetic":
    syn = data_cfg.synthetic
    train = split == data_cfg.train_split
    return synthetic_dataset(syn.num_train_examples if train else syn.num_eval_examples,
                             image_size=syn.image_size, num_classes=syn.num_classes, seed=syn.get("seed", 0),
                             split="train" if train else "eval", process_index=process_index,
                             process_count=process_count)
  raise ValueError(f"Unknown data.source {data_cfg.source!r}; valid choices: tfds, folder, synthetic, csv, sklearn.")
