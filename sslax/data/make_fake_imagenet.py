r"""Writes a small fake ImageNet (TFDS `imagenet2012`) for testing input pipelines offline.

    python -m sslax.data.make_fake_imagenet --out=DIR --num_train=20000 [--num_val=500] \
        [--num_classes=10] [--min_size=150] [--max_size=500] [--file_format=array_record]

The dataset is prepared by TFDS's own, unmodified `imagenet2012` builder: this tool writes fake
manual-download archives in the real ILSVRC2012 layout into a manual dir,

    ILSVRC2012_img_train.tar   one inner tar per class synset, `n01440764.tar`, holding
                               `n01440764_<k>.JPEG` files;
    ILSVRC2012_img_val.tar     `ILSVRC2012_val_XXXXXXXX.JPEG` files (labels come from TFDS's
                               bundled validation-labels file),

and then calls `builder.download_and_prepare(download_config=DownloadConfig(manual_dir=...))`.
The result is DIR/imagenet2012/5.1.0/ and is read exactly like the real dataset: with
`tfds.data_source("imagenet2012", split="train", data_dir=DIR)` (random access) if prepared as
array_record, with `tfds.load("imagenet2012", data_dir=DIR, download=False)` (tf.data) if prepared as
tfrecord (TFDS cannot read array_record files with tf.data). Nothing is downloaded.

The same `download_and_prepare` call with the real `ILSVRC2012_img_train.tar` and
`ILSVRC2012_img_val.tar` (from https://image-net.org) in manual_dir prepares the real dataset:

    import tensorflow_datasets as tfds
    builder = tfds.builder("imagenet2012", data_dir=DIR)
    builder.download_and_prepare(file_format="array_record", download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/tars", try_download_gcs=False))

The fake images are JPEGs of varied sizes (width and height each uniform in [min_size, max_size])
whose content is learnable by class: every class has its own palette and pattern (stripes,
checks or rings at a class-specific angle and period), drawn over a random part of the image at
a random scale and phase, on a random background, with noise and a random brightness shift. The
classes are the first `num_classes` synsets of TFDS's label list, so labels are 0..num_classes-1.
Each image is a deterministic function of (seed, split, index).

Validation labels: TFDS does not map a validation file name to its label by the name. It zips the
*sorted* names in the val tar with its 50000-line labels file, so a tar with only some of the
real files would get the wrong labels. The fake val tar therefore also holds an empty directory
entry for every real file name before the last one it uses: TFDS skips directories when it
reads the examples, but counts them when it sorts the names, so each fake image gets the label
TFDS's labels file gives its name (and every one is among the chosen classes).

Other quirks of the builder: it evaluates the validation labels (opening the val tar) even when
the val tar is missing, so a validation split of at least one image is required; the test split
(ILSVRC2012_img_test.tar) is not written, and TFDS logs a warning that it is missing and skips it.
The archives go to a temporary directory in DIR that is removed afterwards, or with --keep_manual to
DIR/manual/imagenet2012.
"""
from __future__ import annotations

import concurrent.futures
import functools
import io
import multiprocessing
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence

import numpy as np

FILE_FORMATS = ("array_record", "tfrecord")
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
MAX_VAL_PER_CLASS = 50  # The real validation set has 50 images per class.
_CHUNK = 32  # Images per task sent to a worker process.
_SPLIT_IDS = {"train": 0, "validation": 1}


def _tfds():
  import tensorflow_datasets as tfds  # Lazily: TensorFlow is slow to import and not needed to make images.

  return tfds


def imagenet_synsets() -> list[str]:
  """The 1000 ImageNet synsets in TFDS's label order (label i is synsets[i]).

  Returns:
    The label names of the `label` feature of TFDS's imagenet2012 builder, e.g. "n01440764".
  """
  from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

  with open(os.fspath(imagenet_common.label_names_file())) as f:
    return [line.strip() for line in f.read().strip().splitlines()]


def imagenet_validation_labels() -> list[str]:
  """The synset of each real validation image, in the order of its file name (line i: val_{i+1}).

  Returns:
    The 50000 lines of TFDS's bundled imagenet2012 validation-labels file.
  """
  from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

  path = _tfds().core.tfds_path(imagenet_common._VALIDATION_LABELS_FNAME)
  with open(os.fspath(path)) as f:
    return [line.strip() for line in f.read().strip().splitlines()]


def val_file_name(number: int) -> str:
  """The name of the real validation image `number` (1-based), e.g. ILSVRC2012_val_00000001.JPEG."""
  return f"ILSVRC2012_val_{number:08d}.JPEG"


# ----------------------------------------------------------------------------------------------
# Images.


@functools.lru_cache(maxsize=4)
def _noise_field(seed: int, max_size: int) -> np.ndarray:
  """Standard Gaussian noise, float32 (2 * max_size, 2 * max_size, 3), fixed by the seed."""
  return np.random.default_rng([seed, 0x4015E]).standard_normal((2 * max_size, 2 * max_size, 3), dtype=np.float32)


@functools.lru_cache(maxsize=1024)
def _class_template(seed: int, label: int) -> dict:
  """The visual 'concept' of a class: a palette and a pattern, fixed by (seed, label)."""
  rng = np.random.default_rng([seed, 0xC1A55, label])
  palette = rng.integers(0, 256, size=(3, 3)).astype(np.float32)
  # Make the palette's colours clearly distinct from each other.
  while min(np.abs(palette[i] - palette[j]).sum() for i, j in ((0, 1), (0, 2), (1, 2))) < 120:
    palette = rng.integers(0, 256, size=(3, 3)).astype(np.float32)
  return {
      "palette": palette,
      "kind": label % 3,  # 0: stripes, 1: checks, 2: rings.
      "angle": rng.uniform(0, np.pi),
      "period": rng.uniform(0.06, 0.2),  # As a fraction of the image's shorter side.
  }


def make_image(seed: int, split: str, index: int, label: int, min_size: int, max_size: int) -> np.ndarray:
  """One fake image of class `label`, a deterministic function of its arguments.

  Args:
    seed: dataset seed.
    split: "train" or "validation".
    index: the image's index in its split (any integer unique within the split).
    label: class index; sets the image's palette and pattern.
    min_size: smallest height or width.
    max_size: largest height or width.

  Returns:
    uint8 (H, W, 3) with H and W each in [min_size, max_size].
  """
  t = _class_template(seed, label)
  rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
  h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
  short = min(h, w)
  period = t["period"] * short * rng.uniform(0.6, 1.6)  # Random scale.
  angle = t["angle"] + rng.uniform(-0.15, 0.15)
  ys = np.arange(h, dtype=np.float32)[:, None]
  xs = np.arange(w, dtype=np.float32)[None, :]
  if t["kind"] == 2:  # Rings around a random centre.
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    u = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2) / period
    idx = np.floor(u).astype(np.int32)
  else:
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (xs * c + ys * s) / period + rng.uniform(0, 3)
    idx = np.floor(u).astype(np.int32)
    if t["kind"] == 1:  # Checks: add the perpendicular stripes' index.
      idx += np.floor((ys * c - xs * s) / period + rng.uniform(0, 3)).astype(np.int32)
  img = np.take(t["palette"], idx % 3, axis=0)  # (H, W, 3) float32.
  # The pattern covers a random box (at least 40% of each side) on a random background colour.
  bh, bw = max(1, int(h * rng.uniform(0.4, 1.0))), max(1, int(w * rng.uniform(0.4, 1.0)))
  y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
  background = np.empty_like(img)
  background[...] = rng.integers(0, 256, size=3).astype(np.float32)
  background[y0:y0 + bh, x0:x0 + bw] = img[y0:y0 + bh, x0:x0 + bw]
  img = background
  img += rng.uniform(-40, 40) + rng.uniform(-15, 15, size=3).astype(np.float32)  # Brightness, tint.
  # Noise: a random crop of a fixed field of Gaussian noise (drawing fresh noise per image is slow).
  field = _noise_field(seed, max_size)
  ny, nx = int(rng.integers(0, field.shape[0] - h + 1)), int(rng.integers(0, field.shape[1] - w + 1))
  img += field[ny:ny + h, nx:nx + w] * np.float32(rng.uniform(4, 16))
  return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  """Encodes a uint8 (H, W, 3) image as an RGB JPEG with PIL.

  Args:
    image: uint8 (H, W, 3).
    quality: JPEG quality (1..95).

  Returns:
    The JPEG file's bytes.
  """
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def _make_jpegs(task: tuple) -> list[bytes]:
  """Worker: the JPEG bytes of a chunk of images. task = (seed, split, [(index, label)], min, max, quality)."""
  seed, split, items, min_size, max_size, quality = task
  return [encode_jpeg(make_image(seed, split, i, label, min_size, max_size), quality) for i, label in items]


def _jpegs(tasks: Sequence[tuple], num_workers: int) -> Iterator[list[bytes]]:
  """The results of `_make_jpegs` for each task, in order, in worker processes if num_workers > 1."""
  if num_workers <= 1 or len(tasks) <= 1:
    yield from map(_make_jpegs, tasks)
    return
  # "fork" starts fast and works from any caller, but forking a process that has started TensorFlow's or
  # JAX's threads can deadlock; then "spawn" (which needs a caller script with an `if __name__ == ...` guard).
  threaded = any(name in sys.modules for name in ("tensorflow", "jax"))
  ctx = multiprocessing.get_context(
      "fork" if not threaded and "fork" in multiprocessing.get_all_start_methods() else "spawn")
  with concurrent.futures.ProcessPoolExecutor(min(num_workers, len(tasks)), mp_context=ctx) as pool:
    yield from pool.map(_make_jpegs, tasks)


# ----------------------------------------------------------------------------------------------
# Manual-download archives.


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  info.mtime = 0
  info.mode = 0o644
  tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
  info = tarfile.TarInfo(name)
  info.type = tarfile.DIRTYPE
  info.mtime = 0
  info.mode = 0o755
  tar.addfile(info)


def _train_file_names(synset: str, count: int) -> list[str]:
  """`count` file names `<synset>_<k>.JPEG`, k = 1, 2, ..., avoiding names TFDS's builder converts.

  The builder re-encodes ~20 real files it knows to be CMYK or PNG; a fake JPEG with one of those
  names would be (needlessly, or for the PNG one, wrongly) converted, so those k are skipped.
  """
  from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder

  special = set(imagenet2012_dataset_builder.CMYK_IMAGES) | set(imagenet2012_dataset_builder.PNG_IMAGES)
  names, k = [], 0
  while len(names) < count:
    k += 1
    name = f"{synset}_{k}.JPEG"
    if name not in special:
      names.append(name)
  return names


def _chunks(split: str, items: list[tuple[int, int]], seed: int, min_size: int, max_size: int,
            quality: int) -> list[tuple]:
  return [(seed, split, items[i:i + _CHUNK], min_size, max_size, quality) for i in range(0, len(items), _CHUNK)]


def write_train_tar(path: str, num_train: int, synsets: Sequence[str], *, seed: int, min_size: int, max_size: int,
                    quality: int, num_workers: int) -> list[int]:
  """Writes ILSVRC2012_img_train.tar: one inner tar per synset holding that class's JPEGs.

  Train image i (0-based) is of class i % K, so the classes have equal counts up to one.

  Args:
    path: the outer tar to write.
    num_train: total number of training images.
    synsets: the K class synsets (class c is synsets[c]).
    seed: dataset seed.
    min_size: smallest height or width.
    max_size: largest height or width.
    quality: JPEG quality.
    num_workers: processes that make the images (1: in this process).

  Returns:
    The number of images of each class.
  """
  k = len(synsets)
  per_class = [len(range(c, num_train, k)) for c in range(k)]
  items = [(i, i % k) for c in range(k) for i in range(c, num_train, k)]  # Grouped by class.
  results = _jpegs(_chunks("train", items, seed, min_size, max_size, quality), num_workers)
  pending: list[bytes] = []
  with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as outer:
    for c, synset in enumerate(synsets):
      if not per_class[c]:
        continue
      while len(pending) < per_class[c]:
        pending.extend(next(results))
      jpegs, pending = pending[:per_class[c]], pending[per_class[c]:]
      inner_buf = io.BytesIO()
      with tarfile.open(fileobj=inner_buf, mode="w", format=tarfile.GNU_FORMAT) as inner:
        for name, data in zip(_train_file_names(synset, per_class[c]), jpegs):
          _add_bytes(inner, name, data)
      _add_bytes(outer, f"{synset}.tar", inner_buf.getvalue())
  return per_class


def select_val_numbers(num_val: int, synsets: Sequence[str]) -> tuple[list[int], list[int]]:
  """The first `num_val` real validation images (by number) whose label is among `synsets`.

  Args:
    num_val: how many to pick.
    synsets: the chosen class synsets (class c is synsets[c]).

  Returns:
    (numbers, labels): 1-based file numbers, ascending, and each one's class index.

  Raises:
    ValueError: if there are fewer than num_val such images (50 per class).
  """
  label_of = {s: c for c, s in enumerate(synsets)}
  numbers, labels = [], []
  for n, synset in enumerate(imagenet_validation_labels(), start=1):
    if len(numbers) == num_val:
      break
    if synset in label_of:
      numbers.append(n)
      labels.append(label_of[synset])
  if len(numbers) < num_val:
    raise ValueError(f"num_val={num_val} but the real validation set has only {len(numbers)} images of the "
                     f"first {len(synsets)} classes ({MAX_VAL_PER_CLASS} per class).")
  return numbers, labels


def write_val_tar(path: str, num_val: int, synsets: Sequence[str], *, seed: int, min_size: int, max_size: int,
                  quality: int, num_workers: int) -> list[int]:
  """Writes ILSVRC2012_img_val.tar: `num_val` real validation file names of the chosen classes.

  See the module docstring for why the tar also holds empty directory entries.

  Args:
    path: the tar to write.
    num_val: number of validation images.
    synsets: the K class synsets (class c is synsets[c]).
    seed: dataset seed.
    min_size: smallest height or width.
    max_size: largest height or width.
    quality: JPEG quality.
    num_workers: processes that make the images (1: in this process).

  Returns:
    The class index of each validation image, in file-number order.
  """
  numbers, labels = select_val_numbers(num_val, synsets)
  items = list(zip(numbers, labels))  # Image content is indexed by the file number.
  jpegs = [j for chunk in _jpegs(_chunks("validation", items, seed, min_size, max_size, quality), num_workers)
           for j in chunk]
  data = dict(zip(numbers, jpegs))
  with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
    for n in range(1, (numbers[-1] if numbers else 0) + 1):
      if n in data:
        _add_bytes(tar, val_file_name(n), data[n])
      else:  # Placeholder that keeps TFDS's name -> label mapping right (skipped when reading).
        _add_dir(tar, val_file_name(n))
  return labels


# ----------------------------------------------------------------------------------------------
# The dataset.


def make_fake_imagenet(out_dir: str, num_train: int, num_val: int | None = None, num_classes: int = 10,
                       min_size: int = 150, max_size: int = 500, file_format: str = "array_record", seed: int = 0,
                       quality: int = 90, manual_dir: str | None = None, keep_manual: bool = False,
                       num_workers: int | None = None, verbose: bool = False) -> str:
  """Writes fake ILSVRC2012 archives and prepares TFDS `imagenet2012` from them under `out_dir`.

  Args:
    out_dir: TFDS data_dir to write; the dataset goes to out_dir/imagenet2012/5.1.0. It must not
      already hold a prepared imagenet2012 5.1.0.
    num_train: number of training images (classes get equal counts up to one).
    num_val: number of validation images, 1..50 * num_classes (the real validation set's count; at
      least 1 because TFDS's builder always reads the val tar). Default: min(max(1, num_train // 10),
      50 * num_classes).
    num_classes: K, 1..1000: the classes are the first K synsets of TFDS's label list.
    min_size: smallest image height or width.
    max_size: largest image height or width.
    file_format: "array_record" (random access: `tfds.data_source`) or "tfrecord" (`tfds.load`).
    seed: seed of the images (the same arguments give the same dataset).
    quality: JPEG quality.
    manual_dir: where to write the archives. Default: out_dir/manual/imagenet2012 if keep_manual,
      else a temporary directory in out_dir.
    keep_manual: keep the archives (otherwise they are removed after preparation).
    num_workers: processes that make the images. Default: the number of CPUs (1 for small datasets).
    verbose: print progress.

  Returns:
    The TFDS data_dir (out_dir), for `tfds.builder("imagenet2012", data_dir=...)`.
  """
  if not 1 <= num_classes <= 1000:
    raise ValueError(f"num_classes must be in [1, 1000], got {num_classes}.")
  if num_val is None:
    num_val = min(max(1, num_train // 10), MAX_VAL_PER_CLASS * num_classes)
  if num_train < 0:
    raise ValueError(f"num_train must be >= 0, got {num_train}.")
  if num_val < 1:  # TFDS's builder reads the val tar even when it is missing (and then fails).
    raise ValueError(f"num_val must be >= 1, got {num_val}.")
  if num_val > MAX_VAL_PER_CLASS * num_classes:
    raise ValueError(f"num_val={num_val} but the real validation set has only {MAX_VAL_PER_CLASS * num_classes} "
                     f"images of the first {num_classes} classes ({MAX_VAL_PER_CLASS} per class).")
  if not 1 <= min_size <= max_size:
    raise ValueError(f"Need 1 <= min_size <= max_size, got {min_size}, {max_size}.")
  if file_format not in FILE_FORMATS:
    raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}.")
  if num_workers is None:
    num_workers = 1 if num_train + num_val < 500 else (os.cpu_count() or 1)
  tfds = _tfds()
  out_dir = os.path.abspath(out_dir)
  start = time.time()
  synsets = imagenet_synsets()[:num_classes]
  builder = tfds.builder("imagenet2012", data_dir=out_dir)
  if builder.info.features["label"].names[:num_classes] != synsets:  # The label names the builder uses.
    raise RuntimeError("TFDS's imagenet2012 label names are not those of its labels.txt.")
  if builder.is_prepared():
    raise FileExistsError(f"{builder.data_dir} is already prepared.")

  tmp_dir = None
  if manual_dir is None:
    if keep_manual:
      manual_dir = os.path.join(out_dir, "manual", "imagenet2012")
    else:
      os.makedirs(out_dir, exist_ok=True)
      manual_dir = tmp_dir = tempfile.mkdtemp(prefix="fake_imagenet_manual_", dir=out_dir)
  os.makedirs(manual_dir, exist_ok=True)
  args = {"seed": seed, "min_size": min_size, "max_size": max_size, "quality": quality, "num_workers": num_workers}
  try:
    for name in (TRAIN_TAR, VAL_TAR):  # Leftovers of an earlier run would add splits.
      if os.path.exists(os.path.join(manual_dir, name)):
        os.remove(os.path.join(manual_dir, name))
    if num_train:
      write_train_tar(os.path.join(manual_dir, TRAIN_TAR), num_train, synsets, **args)
    write_val_tar(os.path.join(manual_dir, VAL_TAR), num_val, synsets, **args)
    archive_bytes = sum(os.path.getsize(os.path.join(manual_dir, f)) for f in os.listdir(manual_dir))
    made = time.time()
    if verbose:
      print(f"Wrote {num_train} train and {num_val} validation JPEGs ({archive_bytes / 2**20:.1f} MiB of "
            f"archives in {manual_dir}) in {made - start:.1f} s; preparing with TFDS...", flush=True)
    builder.download_and_prepare(
        file_format=file_format,
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False))
  finally:
    if tmp_dir is not None:
      shutil.rmtree(tmp_dir, ignore_errors=True)
    elif not keep_manual:  # A manual_dir the caller gave: remove only the archives written here.
      for name in (TRAIN_TAR, VAL_TAR):
        if os.path.exists(os.path.join(manual_dir, name)):
          os.remove(os.path.join(manual_dir, name))
  if verbose:
    splits = builder.info.splits
    total = time.time() - start
    print(f"Prepared TFDS imagenet2012 ({file_format}) in {builder.data_dir}")
    for split in splits.values():
      print(f"  {split.name}: {split.num_examples} examples in {split.num_shards} shard(s), "
            f"{split.num_bytes / 2**20:.1f} MiB")
    print(f"  classes: {num_classes} ({synsets[0]}..{synsets[-1]}), image sides in [{min_size}, {max_size}]")
    if keep_manual:
      print(f"  manual archives kept in {manual_dir}")
    read = ("tfds.data_source('imagenet2012', split='train', data_dir=" if file_format == "array_record" else
            "tfds.load('imagenet2012', split='train', download=False, data_dir=")
    print(f"Time: {made - start:.1f} s making archives + {total - (made - start):.1f} s TFDS preparation = "
          f"{total:.1f} s.\nRead it with {read}'{out_dir}').")
  return out_dir


def main(argv):
  """Command line entry point (see the module docstring)."""
  from absl import app

  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  make_fake_imagenet(_OUT.value, _NUM_TRAIN.value, num_val=_NUM_VAL.value, num_classes=_NUM_CLASSES.value,
                     min_size=_MIN_SIZE.value, max_size=_MAX_SIZE.value, file_format=_FILE_FORMAT.value,
                     seed=_SEED.value, quality=_QUALITY.value, manual_dir=_MANUAL_DIR.value,
                     keep_manual=_KEEP_MANUAL.value, num_workers=_NUM_WORKERS.value, verbose=True)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.
  from absl import app, flags

  # Defined here, not at import, so that importing this module (tests, benchmarks) adds no global flags.
  _OUT = flags.DEFINE_string("out", None, "TFDS data_dir to write (the dataset goes to OUT/imagenet2012/5.1.0).")
  _NUM_TRAIN = flags.DEFINE_integer("num_train", None, "Number of training images.")
  _NUM_VAL = flags.DEFINE_integer("num_val", None,
                                  "Number of validation images, >= 1 (default min(num_train // 10, 50 * K)).")
  _NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Number of classes (the first K ImageNet synsets).")
  _MIN_SIZE = flags.DEFINE_integer("min_size", 150, "Smallest image height or width.")
  _MAX_SIZE = flags.DEFINE_integer("max_size", 500, "Largest image height or width.")
  _FILE_FORMAT = flags.DEFINE_enum("file_format", "array_record", list(FILE_FORMATS), "TFDS file format.")
  _SEED = flags.DEFINE_integer("seed", 0, "Seed of the images.")
  _QUALITY = flags.DEFINE_integer("quality", 90, "JPEG quality.")
  _MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Where to write the fake ILSVRC2012 tars (default: "
                                    "OUT/manual/imagenet2012 with --keep_manual, else a temporary dir in OUT).")
  _KEEP_MANUAL = flags.DEFINE_bool("keep_manual", False, "Keep the fake ILSVRC2012 tars.")
  _NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Processes that make the images (default: CPUs).")
  flags.mark_flags_as_required(["out", "num_train"])
  app.run(main)
