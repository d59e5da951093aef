"""Streaming input for datasets larger than host memory (ImageNet and beyond).

The in-memory path (sslax/data/sources.py) decodes a whole split at one fixed size. This
path keeps only encoded records on disk and an index of where they are:

* A **record source** gives random access to example i of a split: TFDS datasets in
  ArrayRecord format (through `array_record`, what `tfds.data_source` uses), TFDS datasets in
  TFRecord format (an offset index built once by reading the 12-byte record headers, then
  `os.pread`), or a folder of image files (a sorted file list).
* The **global batch of step s** is `EpochSampler.global_indices(s)`, a function of
  (seed, step) alone, as in memory; each process reads only its rows of it.
* Each view's **random resized crop** is taken from the full encoded image: the crop box is
  drawn by `augment.crop_boxes` from the same per-example key the on-device augmentation uses
  (seed, step, row of the global batch), then only that window is decoded
  (`tf.image.decode_and_crop_jpeg`: libjpeg skips the rows outside the crop) and resized to
  the crop size on the host. Flips, colour, blur and solarize stay on the device.
* Decoding runs in a pool of host threads (TensorFlow's decode ops release the GIL) and
  batches are prepared `prefetch` steps ahead; host memory is the index plus those batches,
  whatever the dataset's size.

Because a batch depends only on its step, the iterator state is the step already in the
TrainState: a resumed run reads exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import logging
import os
import threading
from typing import Callable, Iterator, Sequence

import numpy as np

from sslax.data.loader import EpochSampler, prefetch
from sslax.data.sources import DatasetNotFoundError, IMAGE_EXTENSIONS, list_image_files

ON_CORRUPT = ("skip", "error")


class CorruptImageError(ValueError):
  """An image could not be decoded (config data.on_corrupt='error')."""


# ----------------------------------------------------------------------------- record sources


class TFRecordIndex:
  """Random access to the records of TFRecord files through an offset index.

  A TFRecord is [uint64 length][uint32 crc][data][uint32 crc]; the index (file, offset,
  length per record) is built by reading only the headers. Local files are read with
  `os.pread` (thread-safe, no shared file position); other paths (gs://...) through
  `tf.io.gfile`, one open file per thread.

  Args:
    files: (path, skip, take) per shard, in split order (TFDS file instructions).
  """

  def __init__(self, files: Sequence[tuple[str, int, int]]):
    self.paths = [f[0] for f in files]
    shard, offset, length = [], [], []
    for s, (path, skip, take) in enumerate(files):
      offs, lens = _scan_tfrecord(path)
      end = len(offs) if take < 0 else skip + take
      shard.append(np.full(end - skip, s, np.int32))
      offset.append(offs[skip:end])
      length.append(lens[skip:end])
    self.shard = np.concatenate(shard)
    self.offset = np.concatenate(offset)
    self.length = np.concatenate(length)
    self._fds: dict[int, int] = {}
    self._lock = threading.Lock()
    self._remote = threading.local()

  def __len__(self) -> int:
    return len(self.shard)

  def _fd(self, s: int) -> int:
    with self._lock:
      if s not in self._fds:
        self._fds[s] = os.open(self.paths[s], os.O_RDONLY)
      return self._fds[s]

  def __getitem__(self, i: int) -> bytes:
    s, offset, length = int(self.shard[i]), int(self.offset[i]), int(self.length[i])
    if _is_local(self.paths[s]):
      return os.pread(self._fd(s), length, offset)
    files = self._remote.__dict__.setdefault("files", {})
    if s not in files:
      import tensorflow as tf

      files[s] = tf.io.gfile.GFile(self.paths[s], "rb")
    files[s].seek(offset)
    return files[s].read(length)


def _is_local(path: str) -> bool:
  return "://" not in path


def _scan_tfrecord(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(data offsets, data lengths) of every record in one TFRecord file."""
  offsets, lengths = [], []
  if _is_local(path):
    size, f = os.path.getsize(path), open(path, "rb")
  else:
    import tensorflow as tf

    size, f = tf.io.gfile.stat(path).length, tf.io.gfile.GFile(path, "rb")
  with f:
    pos = 0
    while pos < size:
      header = f.read(12)
      if len(header) < 12:
        raise CorruptImageError(f"Truncated TFRecord header at byte {pos} of {path}.")
      n = int.from_bytes(header[:8], "little")
      offsets.append(pos + 12)
      lengths.append(n)
      pos += 12 + n + 4
      f.seek(pos)
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


class ArrayRecordIndex:
  """Random access to ArrayRecord shards (TFDS `file_format=array_record`).

  Args:
    files: (path, skip, take, records in the shard) per shard, in split order.
  """

  def __init__(self, files: Sequence[tuple[str, int, int, int]]):
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    self._source = ArrayRecordDataSource([f[0] for f in files])
    starts = np.cumsum([0] + [f[3] for f in files[:-1]])
    self._positions = np.concatenate([start + skip + np.arange(take, dtype=np.int64)
                                      for start, (_, skip, take, _) in zip(starts, files)])

  def __len__(self) -> int:
    return len(self._positions)

  def __getitem__(self, i: int) -> bytes:
    return self._source[int(self._positions[i])]


@dataclasses.dataclass
class Record:
  """One example before decoding: the encoded image, its label, a name for messages."""

  data: bytes
  label: int
  name: str


class TfdsRecords:
  """Records of a TFDS split (serialized tf.train.Example with 'image' bytes and 'label').

  Args:
    name: TFDS name (optionally 'name:version').
    split: split or slice, e.g. 'train' or 'validation[:10%]'.
    data_dir: prepared TFDS datasets (default $TFDS_DATA_DIR).

  Raises:
    DatasetNotFoundError: the dataset is not prepared under data_dir.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    from sslax.data.sources import tfds_builder

    builder = tfds_builder(name, data_dir)
    info = builder.info.splits[split]
    files = [(fi.filename, fi.skip, fi.take, fi.examples_in_shard) for fi in info.file_instructions]
    fmt = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    self.index = ArrayRecordIndex(files) if fmt == "array_record" else TFRecordIndex([f[:3] for f in files])
    if len(self.index) != info.num_examples:
      raise DatasetNotFoundError(f"{name} {split}: found {len(self.index)} records in {builder.data_dir}, "
                                 f"expected {info.num_examples}; the prepared files are incomplete.")
    features = builder.info.features
    self.num_classes = int(features["label"].num_classes) if "label" in features else 0
    self.shape = tuple(features["image"].shape)
    self.description = f"{name} {split} in {builder.data_dir}"

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, i: int) -> Record:
    import tensorflow as tf

    example = tf.train.Example.FromString(self.index[i])
    feature = example.features.feature
    label = int(feature["label"].int64_list.value[0]) if "label" in feature else -1
    return Record(feature["image"].bytes_list.value[0], label, f"{self.description}, record {i}")


class FolderRecords:
  """Records of a folder of image files (class subfolders optional), in sorted order."""

  def __init__(self, directory: str, extensions: Sequence[str] = IMAGE_EXTENSIONS):
    self.files, self.labels, self.num_classes = list_image_files(directory, extensions)
    self.shape = (None, None, 3)
    self.description = directory

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> Record:
    with open(self.files[i], "rb") as f:
      return Record(f.read(), int(self.labels[i]), self.files[i])


# ----------------------------------------------------------------------------- decoding


def _is_jpeg(data: bytes) -> bool:
  return data[:3] == b"\xff\xd8\xff"


def image_shape(data: bytes) -> tuple[int, int]:
  """(height, width) from the encoded header only (PIL reads no pixels here)."""
  from PIL import Image

  with Image.open(io.BytesIO(data)) as img:
    return img.size[1], img.size[0]


def decode_crops(data: bytes, boxes: np.ndarray, size: int) -> np.ndarray:
  """Crops (top, left, height, width) of an encoded image, each resized to size x size.

  PIL decodes and resizes in C without the GIL, so a pool of threads scales over cores. For
  a JPEG whose crops are all larger than the output, PIL's draft mode decodes at 1/2, 1/4 or
  1/8 scale in the DCT domain (the decoder's cheap path, as decode_and_crop_jpeg is for
  small crops); the box is rescaled to the reduced image. Resizing is bilinear with
  antialiasing (PIL widens the filter when downscaling), like the on-device crop.

  Args:
    data: encoded JPEG/PNG/... bytes.
    boxes: int (V, 4) crop windows inside the image.
    size: output side.

  Returns:
    uint8 (V, size, size, 3).
  """
  from PIL import Image

  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  with Image.open(io.BytesIO(data)) as img:
    width, height = img.size
    if img.format == "JPEG":
      # The smallest reduced size at which every crop still has at least `size` pixels a side.
      shrink = min(min(b[2], b[3]) for b in boxes) / size
      if shrink >= 2:
        img.draft("RGB", (int(np.ceil(width / shrink)), int(np.ceil(height / shrink))))
    img = img.convert("RGB")
    sx, sy = img.size[0] / width, img.size[1] / height
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for v, (top, left, h, w) in enumerate(boxes):
      box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
      out[v] = np.asarray(img.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None))
  return out


def center_box(height: int, width: int, fraction: float = 1.0) -> np.ndarray:
  """(top, left, side, side) of the central square of `fraction` of the shorter side."""
  side = max(1, int(round(min(height, width) * fraction)))
  return np.array([(height - side) // 2, (width - side) // 2, side, side], np.int32)


# ----------------------------------------------------------------------------- the reader


class StreamingReader:
  """Reads and decodes examples of a record source in a pool of host threads.

  Args:
    records: TfdsRecords or FolderRecords.
    num_workers: decoding threads.
    on_corrupt: 'skip' (warn once naming the file and use the next example in the split
      instead, so batches stay full and deterministic) or 'error' (raise CorruptImageError).
  """

  def __init__(self, records, num_workers: int = 0, on_corrupt: str = "skip"):
    if on_corrupt not in ON_CORRUPT:
      raise ValueError(f"config.data.on_corrupt={on_corrupt!r}; valid choices: {', '.join(ON_CORRUPT)}.")
    self.records = records
    self.on_corrupt = on_corrupt
    self.num_workers = num_workers or os.cpu_count() or 1
    self._pool = concurrent.futures.ThreadPoolExecutor(self.num_workers, thread_name_prefix="sslax-decode")
    self._warned: set[str] = set()

  def __len__(self) -> int:
    return len(self.records)

  def _with_fallback(self, index: int, fn: Callable[[Record], tuple]) -> tuple:
    """fn(record) for `index`, or for the next decodable example if it is corrupt and skipped."""
    for attempt in range(min(len(self.records), 100)):
      i = (index + attempt) % len(self.records)
      record = None
      try:
        record = self.records[i]
        return fn(record)
      except Exception as e:  # Any decoder failure: PIL, TensorFlow, protobuf, I/O.
        name = record.name if record is not None else f"{self.records.description}, example {i}"
        if self.on_corrupt == "error":
          raise CorruptImageError(f"Cannot decode {name}: {e}. Remove or re-encode the file, or set "
                                  f"--config.data.on_corrupt=skip to skip corrupt images.") from e
        if name not in self._warned:
          self._warned.add(name)
          logging.warning("Skipping corrupt image %s (%s: %s); using the next example instead.", name,
                          type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    raise CorruptImageError(f"100 consecutive examples from {index} of {self.records.description} are corrupt.")

  def labels(self, indices: np.ndarray) -> np.ndarray:
    """int32 labels of `indices` (folder sources know them without reading files)."""
    if isinstance(self.records, FolderRecords):
      return self.records.labels[np.asarray(indices)].astype(np.int32)
    return np.asarray(list(self._pool.map(lambda i: self.records[int(i)].label, indices)), np.int32)

  def center_crops(self, indices: np.ndarray, size: int, fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation images: the central square (`fraction` of the shorter side) resized to `size`.

    Returns:
      (uint8 (n, size, size, 3), int32 (n,) labels).
    """
    def one(i):
      def fn(record):
        h, w = image_shape(record.data)
        return decode_crops(record.data, center_box(h, w, fraction)[None], size)[0], record.label
      return self._with_fallback(int(i), fn)

    out = list(self._pool.map(one, indices))
    images = np.stack([o[0] for o in out]) if out else np.zeros((0, size, size, 3), np.uint8)
    return images, np.asarray([o[1] for o in out], np.int32)

  def random_crops(self, indices: np.ndarray, box_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], list],
                   sizes: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each example's views: crop boxes from `box_fn`, decoded and resized on the host.

    Args:
      indices: dataset indices of this process's rows.
      box_fn: `(rows, heights, widths) -> [int (n, 4) boxes per view]`; rows are positions in
        `indices` (0..n-1), so a skipped corrupt example gets its row's boxes redrawn for the
        replacement's size.
      sizes: output side of each view.

    Returns:
      ([uint8 (n, s, s, 3) per view], int32 (n,) labels).
    """
    indices = np.asarray(indices)
    records = list(self._pool.map(lambda i: self._with_fallback(int(i), lambda r: (r, image_shape(r.data))),
                                  indices))
    heights = np.array([shape[0] for _, shape in records], np.int32)
    widths = np.array([shape[1] for _, shape in records], np.int32)
    boxes = box_fn(np.arange(len(indices)), heights, widths)

    def decode_row(row):
      record = records[row][0]
      try:
        return [decode_crops(record.data, b[row][None], s)[0] for b, s in zip(boxes, sizes)], record.label
      except Exception:  # The header parsed but the pixels do not: fall back like a bad header.
        def fn(r):
          h, w = image_shape(r.data)
          row_boxes = box_fn(np.array([row]), np.array([h], np.int32), np.array([w], np.int32))
          return [decode_crops(r.data, b, s)[0] for b, s in zip(row_boxes, sizes)], r.label
        return self._with_fallback(int(indices[row]), fn)

    out = list(self._pool.map(decode_row, range(len(indices))))
    views = [np.stack([o[0][v] for o in out]) for v in range(len(sizes))]
    return views, np.asarray([o[1] for o in out], np.int32)


# ----------------------------------------------------------------------------- lazy arrays


class LazyImages:
  """A uint8 (N, S, S, 3) array whose rows are decoded (center crops) when read.

  Slicing returns another LazyImages; integer-array indexing and `np.asarray` decode. This
  lets feature extraction, the kNN monitor and the probes stream: they read one batch of
  rows at a time.
  """

  def __init__(self, reader: StreamingReader, positions: np.ndarray, size: int, fraction: float = 1.0):
    self.reader, self.positions, self.size, self.fraction = reader, np.asarray(positions, np.int64), size, fraction
    self.dtype = np.dtype(np.uint8)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self.positions), self.size, self.size, 3)

  @property
  def ndim(self) -> int:
    return 4

  def __len__(self) -> int:
    return len(self.positions)

  def __getitem__(self, key):
    if isinstance(key, slice):
      return LazyImages(self.reader, self.positions[key], self.size, self.fraction)
    if isinstance(key, (int, np.integer)):
      return self.reader.center_crops(self.positions[[key]], self.size, self.fraction)[0][0]
    return self.reader.center_crops(self.positions[np.asarray(key)], self.size, self.fraction)[0]

  def __array__(self, dtype=None, copy=None):
    out = self.reader.center_crops(self.positions, self.size, self.fraction)[0]
    return out if dtype is None else out.astype(dtype)


class LazyLabels:
  """int32 (N,) labels read on demand (and cached once read whole)."""

  def __init__(self, reader: StreamingReader, positions: np.ndarray):
    self.reader, self.positions = reader, np.asarray(positions, np.int64)
    self.dtype, self._all = np.dtype(np.int32), None
    self.shape = (len(self.positions),)

  def __len__(self) -> int:
    return len(self.positions)

  def __getitem__(self, key):
    if isinstance(key, slice):
      return LazyLabels(self.reader, self.positions[key])
    return np.asarray(self)[key]

  def __array__(self, dtype=None, copy=None):
    if self._all is None:
      self._all = self.reader.labels(self.positions)
    return self._all if dtype is None else self._all.astype(dtype)


@dataclasses.dataclass(frozen=True)
class StreamingDataset:
  """The streaming counterpart of ImageDataset: same fields, decoded on demand.

  Attributes:
    reader: the StreamingReader over the split's records.
    images: LazyImages (center crops at data.image_size, for evaluation).
    labels: LazyLabels.
    num_classes: from the dataset's metadata (or class folders).
    indices: int64 (N,) positions in the split.
  """

  reader: StreamingReader
  images: LazyImages
  labels: LazyLabels
  num_classes: int
  indices: np.ndarray

  def __len__(self) -> int:
    return len(self.indices)

  @property
  def inputs(self) -> LazyImages:
    """What the model reads of every example (the lazily decoded images)."""
    return self.images


def open_streaming(data_cfg, split: str) -> StreamingDataset:
  """A StreamingDataset for `split` of the dataset `data_cfg` describes ('tfds' or 'folder').

  Raises:
    DatasetNotFoundError: the dataset or folder is missing.
  """
  if data_cfg.source == "tfds":
    records = TfdsRecords(data_cfg.name, split, data_cfg.data_dir)
  elif data_cfg.source == "folder":
    from sslax.data.sources import folder_for_split

    records = FolderRecords(folder_for_split(data_cfg, split))
  else:
    raise ValueError(f"data.source={data_cfg.source!r} cannot stream; streaming serves 'tfds' and 'folder' "
                     f"(set --config.data.in_memory=True).")
  reader = StreamingReader(records, num_workers=data_cfg.get("num_workers", 0),
                           on_corrupt=data_cfg.get("on_corrupt", "skip"))
  size = data_cfg.image_size or (records.shape[0] if records.shape[0] else None)
  if size is None:
    raise ValueError(f"{records.description} has images of different sizes: set --config.data.image_size "
                     f"(the evaluation center-crop size, e.g. 224).")
  positions = np.arange(len(records), dtype=np.int64)
  fraction = data_cfg.get("center_crop_fraction", 1.0)
  return StreamingDataset(reader=reader, images=LazyImages(reader, positions, size, fraction),
                          labels=LazyLabels(reader, positions), num_classes=records.num_classes,
                          indices=positions)


# ----------------------------------------------------------------------------- training batches


def view_keys(num_global: int, num_local: int) -> tuple[str, ...]:
  """Batch fields of pre-cropped views: 'view0'.. then 'local0'.."""
  return tuple(f"view{v}" for v in range(num_global)) + tuple(f"local{j}" for j in range(num_local))


def streaming_train_batches(dataset: StreamingDataset, *, batch_size: int, seed: int, start_step: int,
                            augment_cfg, num_global_views: int, process_index: int = 0, process_count: int = 1,
                            keys: Sequence[str] = (), to_device: Callable | None = None,
                            prefetch_size: int = 2) -> Iterator[tuple[int, dict]]:
  """Yields (step, this process's rows of the global batch) with pre-cropped views, forever.

  The batch holds 'view0'.. (num_global_views crops at augment.crop_size), 'local0'..
  (augment.num_local_crops crops at local_crop_size), 'label' and 'index'. View v of global
  row r at step s has the crop box `augment.crop_boxes` draws from key (seed, s, r), which is
  the box the on-device augmentation would draw for an in-memory image of the same size.

  Args:
    dataset: from open_streaming.
    batch_size: the global batch size.
    seed: the run's seed (data order and augmentation keys).
    start_step: first step (resume point).
    augment_cfg: config.augment.
    num_global_views: the method's number of full-size views.
    process_index, process_count: this process and how many there are.
    keys: the fields to keep (default all).
    to_device: maps the host batch to device arrays (in the prefetch thread).
    prefetch_size: batches prepared ahead.
  """
  from sslax.augment import crop_boxes

  sampler = EpochSampler(len(dataset), batch_size, seed, process_index, process_count)
  local = batch_size // process_count
  num_local = augment_cfg.get("num_local_crops", 0)
  names = view_keys(num_global_views, num_local)
  sizes = [augment_cfg.crop_size] * num_global_views + [augment_cfg.local_crop_size] * num_local
  scales = [tuple(augment_cfg.crop_scale)] * num_global_views + [tuple(augment_cfg.local_crop_scale)] * num_local
  ratio = tuple(augment_cfg.crop_ratio)

  def produce():
    step = start_step
    while True:
      idx = sampler.indices(step)
      rows0 = process_index * local

      def box_fn(rows, heights, widths, step=step):
        return [crop_boxes(seed, step, rows0 + rows, heights, widths, view=v, scale=scales[v], ratio=ratio)
                for v in range(len(sizes))]

      views, labels = dataset.reader.random_crops(idx, box_fn, sizes)
      batch = dict(zip(names, views), label=labels, index=dataset.indices[idx].astype(np.int32))
      if keys:
        batch = {k: batch[k] for k in keys}
      yield step, (to_device(batch) if to_device else batch)
      step += 1

  return prefetch(produce(), prefetch_size)
