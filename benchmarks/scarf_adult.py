r"""SCARF on UCI Adult: pretrain, then the tabular protocol at 1%/10%/100% labels, over seeds.

For each seed: `python -m sslax.main --config=configs/scarf.py:cpu --config.seed=S` (in-process,
through sslax.train.train_and_evaluate), then sslax.evaluate.tabular.tabular_protocol: the linear
probe and fine-tuning of the SCARF encoder next to the linear probe on raw features and the same
MLP trained from scratch. Prints a Markdown table of mean +- std test accuracy and writes every
record to --out (JSON).

  TFDS_DATA_DIR unused; Adult is read from $SSLAX_TABULAR_DIR/adult (default ../shared/tabular/adult).
  python benchmarks/scarf_adult.py --workdir=/tmp/scarf_adult --seeds=0,1,2 \
      --out=benchmarks/results/scarf_adult.json
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "/tmp/scarf_adult", "Pretraining workdirs go to WORKDIR/seed<S>.")
flags.DEFINE_string("config", "configs/scarf.py:cpu", "Pretraining config.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: pretraining, labelled subsets and fine-tuning.")
flags.DEFINE_list("fractions", ["0.01", "0.1", "1.0"], "Label fractions.")
flags.DEFINE_list("overrides", [], "Config overrides key=value, e.g. total_epochs=10.")
flags.DEFINE_string("out", "", "JSON file for every record (default: WORKDIR/results.json).")


def _value(text: str):
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def main(argv):
  del argv
  import numpy as np

  from sslax.config_utils import load_config_file
  from sslax.data import load_dataset
  from sslax.evaluate.pretrained import load_pretrained
  from sslax.evaluate.tabular import tabular_protocol
  from sslax.metrics import quiet_library_logs
  from sslax.train import train_and_evaluate

  quiet_library_logs()
  overrides = dict(o.split("=", 1) for o in FLAGS.overrides)
  records, pretrain = [], {}
  for seed in map(int, FLAGS.seeds):
    config = load_config_file(FLAGS.config, {**{k: _value(v) for k, v in overrides.items()}, "seed": seed})
    workdir = os.path.join(FLAGS.workdir, f"seed{seed}")
    t0 = time.time()
    summary = train_and_evaluate(config, workdir)
    if summary["stopped_by_signal"]:  # Saved; rerunning the same command resumes.
      sys.exit(f"Stopped by a signal during pretraining of seed {seed}; rerun to resume.")
    pretrain[seed] = {"seconds": time.time() - t0, "knn_top1": summary.get("knn_top1"),
                      "online_probe_top1": summary.get("online_probe_top1"), "step": summary["step"]}
    print(f"seed {seed}: pretrained {summary['step']} steps in {pretrain[seed]['seconds']:.0f} s, "
          f"kNN top-1 {summary.get('knn_top1', float('nan')):.4f}", flush=True)
    backbone = load_pretrained(workdir)
    train, test = load_dataset(config.data, config.data.train_split), load_dataset(config.data, config.data.eval_split)
    for r in tabular_protocol(backbone.module, backbone.variables, train, test,
                              fractions=[float(f) for f in FLAGS.fractions], seed=seed):
      records.append(r)
      print(f"  {r['fraction']:>5g}  {r['protocol']:<10} {r['top1']:.4f}  ({r['seconds']:.0f} s)", flush=True)

  print("\n| labels | SCARF probe | SCARF fine-tune | raw-feature probe | MLP from scratch |")
  print("|---|---|---|---|---|")
  for fraction in [float(f) for f in FLAGS.fractions]:
    cells = []
    for protocol in ("probe", "finetune", "raw_probe", "scratch"):
      acc = np.array([r["top1"] for r in records if r["fraction"] == fraction and r["protocol"] == protocol])
      cells.append(f"{100 * acc.mean():.2f} +- {100 * acc.std():.2f}")
    print(f"| {fraction * 100:g}% | " + " | ".join(cells) + " |")
  out = FLAGS.out or os.path.join(FLAGS.workdir, "results.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump({"config": FLAGS.config, "overrides": overrides, "pretrain": pretrain, "records": records}, f, indent=1)
  print(f"Wrote {out}")


if __name__ == "__main__":
  app.run(main)
