r"""Streaming input pipeline: host decode + crop throughput, and peak memory against dataset size.

1. Throughput: the streaming reader (sslax/data/streaming.py) decodes each example's two
   random resized crops at 224x224 straight from its JPEG (PIL draft mode when the crop allows
   it), with 1 and with all decoding threads; reported as images/s and images/s per core.
2. Memory: trains ResNet-18 x0.25 on 64x64 crops for `--steps` steps over the first 5,000 and
   over 20,000 images of the same dataset, each run in a fresh process, and reports each run's
   peak RSS (from wait4). Host memory should not grow with the dataset: the run keeps only the
   record index and the batches being prepared.

Needs a fake ImageNet of at least 20,000 JPEGs (150-500 px):
  python -m sslax.data.make_fake_imagenet --out=/tmp/fake_imagenet --num_train=20000 --num_val=1000 --num_classes=100
  python benchmarks/input_pipeline.py --data_dir=/tmp/fake_imagenet
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def throughput(data_dir: str, workers: int, batches: int, batch: int = 128) -> float:
  """Images (each with 2 views of 224x224) per second over `batches` batches."""
  import numpy as np

  from sslax.augment import crop_boxes
  from sslax.data.streaming import StreamingReader, TfdsRecords

  reader = StreamingReader(TfdsRecords("imagenet2012", "train", data_dir), num_workers=workers)

  def box_fn(rows, h, w):
    return [crop_boxes(0, 0, rows, h, w, view=v, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) for v in (0, 1)]

  reader.random_crops(np.arange(batch), box_fn, [224, 224])  # Compile the box sampler, warm the cache.
  start = time.perf_counter()
  for b in range(1, batches + 1):
    reader.random_crops(np.arange(b * batch, (b + 1) * batch), box_fn, [224, 224])
  return batches * batch / (time.perf_counter() - start)


def peak_rss_of_training(data_dir: str, num_images: int, steps: int, batch: int) -> tuple[float, float]:
  """(peak RSS in MiB, wall seconds) of a fresh process training on the first `num_images`."""
  workdir = tempfile.mkdtemp(prefix=f"sslax_rss_{num_images}_")
  cmd = [sys.executable, "-m", "sslax.main", "--config=configs/simclr.py:imagenet", f"--workdir={workdir}",
         f"--config.data.data_dir={data_dir}", f"--config.data.train_split=train[:{num_images}]",
         "--config.model.backbone=resnet18", "--config.model.width_multiplier=0.25", "--config.model.stem=cifar",
         "--config.augment.crop_size=64", "--config.data.image_size=64", f"--config.batch_size={batch}",
         f"--config.total_steps={steps}", "--config.warmup_steps=10", "--config.knn.every_steps=0", "--config.knn.at_end=False",
         "--config.checkpoint.every_steps=100000", "--config.model.projector.hidden_dims=(512,)",
         "--config.online_probe.enabled=False", "--config.optimizer.name=sgd"]
  start = time.time()
  log = os.path.join(workdir, "stderr.log")
  with open(log, "w") as err:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
  wall = time.time() - start
  if status != 0:
    with open(log) as f:
      raise RuntimeError(f"Training on {num_images} images failed:\n{f.read()[-3000:]}")
  return usage.ru_maxrss / 1024.0, wall  # ru_maxrss is in KiB on Linux.


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir holding a (fake) imagenet2012")
  parser.add_argument("--batches", type=int, default=8, help="decode batches of 128 per thread count")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--sizes", default="5000,20000")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  args = parser.parse_args()

  cores = os.cpu_count() or 1
  results = {"cores": cores, "throughput": {}, "memory": {}}
  for workers in sorted({1, cores}):
    rate = throughput(args.data_dir, workers, args.batches)
    results["throughput"][workers] = rate
    print(f"decode + 2 crops at 224x224, {workers} thread(s): {rate:.1f} images/s "
          f"({rate / min(workers, cores):.1f} per core)", flush=True)
  for n in (int(x) for x in args.sizes.split(",")):
    rss, wall = peak_rss_of_training(args.data_dir, n, args.steps, args.batch)
    results["memory"][n] = {"peak_rss_mib": rss, "wall_s": wall}
    print(f"train {args.steps} steps over {n} images: peak RSS {rss:.0f} MiB ({wall:.0f} s)", flush=True)
  sizes = sorted(results["memory"])
  if len(sizes) >= 2:
    lo, hi = results["memory"][sizes[0]]["peak_rss_mib"], results["memory"][sizes[-1]]["peak_rss_mib"]
    results["rss_ratio"] = hi / lo
    print(f"peak RSS {sizes[-1]} / {sizes[0]} images: {hi / lo:.3f}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
