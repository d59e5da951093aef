r"""Recomputes a method's end-of-training metrics (Method.final_metrics: CLIP's zero-shot accuracy
and retrieval recall) from a pretraining workdir's latest checkpoint, without training.

  TFDS_DATA_DIR=../shared/tensorflow_datasets python benchmarks/method_final_metrics.py --workdir=/tmp/bench_clip
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A pretraining workdir (config.json + checkpoints/).", required=True)


def main(argv):
  del argv
  import jax
  import ml_collections
  import numpy as np

  from sslax.checkpoint import Checkpointer, abstract_with_shardings
  from sslax.data import load_dataset
  from sslax.metrics import quiet_library_logs
  from sslax.monitors import KNNMonitor
  from sslax.step import build_setup, create_train_state

  quiet_library_logs()
  with open(os.path.join(FLAGS.workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  train = load_dataset(config.data, config.data.train_split)
  setup = build_setup(config, len(train), num_classes=train.num_classes,
                      input_shapes=getattr(train, "input_shapes", None))
  with Checkpointer(FLAGS.workdir, async_save=False) as checkpointer:
    state = checkpointer.restore(abstract_with_shardings(create_train_state(setup, jax.random.PRNGKey(config.seed))))
  monitor = KNNMonitor(config, setup.model, setup.mesh, train, load_dataset(config.data, config.data.eval_split))
  metrics = setup.method.final_metrics(setup.model, {"params": state.params, "batch_stats": state.batch_stats},
                                       monitor.test_images, np.asarray(monitor.test_labels), mesh=setup.mesh,
                                       data_cfg=config.data, batch_size=config.knn.batch_size)
  print(json.dumps({"step": int(state.step), **metrics}, indent=1))


if __name__ == "__main__":
  app.run(main)
