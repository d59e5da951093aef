r"""Time of the weighted kNN classifier on CIFAR-sized random features (10k test x 50k train).

  python benchmarks/knn_speed.py [--dim=128] [--k=200]
"""
import argparse
import sys
import time

import numpy as np

sys.path.insert(0, ".")
from sslax.evaluate.knn import knn_accuracy  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--k", type=int, default=200)
  parser.add_argument("--train", type=int, default=50000)
  parser.add_argument("--test", type=int, default=10000)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  train = rng.normal(size=(args.train, args.dim)).astype(np.float32)
  test = rng.normal(size=(args.test, args.dim)).astype(np.float32)
  ytr, yte = rng.integers(0, 10, args.train), rng.integers(0, 10, args.test)
  for chunk in (256, 1024):
    start = time.perf_counter()
    knn_accuracy(train, ytr, test, yte, num_classes=10, k=args.k, temperature=0.1, chunk_size=chunk)
    print(f"chunk {chunk}: {time.perf_counter() - start:.1f} s (incl. compilation)")


if __name__ == "__main__":
  main()
