r"""kNN top-1 against training wall-clock time, read from a run's metrics.jsonl.

Prints a markdown table (step, epoch, training minutes, kNN top-1, images/s) and the
kNN top-1 of the last evaluation at or before --minutes of training time (compile and
evaluation time excluded, as logged in `train_time_s`).

  python benchmarks/knn_curve.py --workdir=workdirs/simclr_cpu --minutes=20
"""
from __future__ import annotations

import argparse
import sys

sys.path.insert(0, ".")
from sslax.metrics import read_metrics  # noqa: E402


def curve(workdir: str) -> list[dict]:
  """One row per kNN evaluation: step, train minutes, kNN top-1, and the nearest training record's img/s."""
  records = read_metrics(workdir)
  train_rows = {r["step"]: r for r in records if "loss" in r}
  rows = []
  for r in records:
    if "knn_top1" not in r:
      continue
    nearest = max((s for s in train_rows if s <= r["step"]), default=None)
    info = train_rows.get(nearest, {})
    rows.append({"step": r["step"], "epoch": info.get("epoch", float("nan")), "minutes": r["train_time_s"] / 60,
                 "knn_top1": r["knn_top1"], "images_per_sec": info.get("images_per_sec", float("nan")),
                 "loss": info.get("loss", float("nan"))})
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--minutes", type=float, default=20.0)
  args = parser.parse_args()
  rows = curve(args.workdir)
  if not rows:
    sys.exit(f"No kNN evaluations in {args.workdir}/metrics.jsonl.")
  print("| step | epoch | train min | loss | kNN top-1 | img/s |")
  print("|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['step']} | {r['epoch']:.2f} | {r['minutes']:.1f} | {r['loss']:.3f} | {r['knn_top1']:.4f} "
          f"| {r['images_per_sec']:.0f} |")
  # One step of slack: a --config.max_train_minutes run stops on the first step past the budget.
  within = [r for r in rows if r["minutes"] <= args.minutes + 1.0 / 60]
  if within:
    best = within[-1]
    print(f"\nkNN top-1 at {best['minutes']:.1f} min of training (<= {args.minutes:g}): {best['knn_top1']:.4f}")


if __name__ == "__main__":
  main()
