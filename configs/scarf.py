r"""SCARF (Bahri et al. 2022, "SCARF: Self-Supervised Contrastive Learning using Random Feature
Corruption", ICLR) on tables: UCI Adult (CSV) or scikit-learn's bundled tables.

Presets (`--config=configs/scarf.py:PRESET`):
  adult  The paper's recipe (section 4): a 4-layer ReLU MLP encoder of width 256, a 2-layer
         ReLU projection head of width 256, corruption rate 0.6, InfoNCE temperature 1.0, Adam at
         1e-3, batch 128, 1000 epochs.
  cpu    (default) The same model and loss at batch 512 for 100 epochs: 6300 steps, about 9
         minutes on 2 CPU cores (0.08 s a step); BENCHMARKS.md "SCARF on UCI Adult" evaluates
         it with the tabular protocol. The scikit-learn tables: batch 64, 200 epochs.
  tiny   A few steps of a small encoder, for tests.

Option `data=adult|breast_cancer|wine|digits|iris` picks the table (default adult). Adult is
read from $SSLAX_TABULAR_DIR/adult (default ../shared/tabular/adult, beside the checkout):
adult.data.csv for training, adult.test.csv for evaluation, label column 'outcome'. Any CSV
with a header row works the same way: --config.data.table.train_path=FILE
--config.data.table.eval_path=FILE --config.data.table.label_column=NAME.
"""
import os

import ml_collections

PRESETS = ("cpu", "adult", "tiny")
TABLES = ("adult", "breast_cancer", "wine", "digits", "iris")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config of a preset: `cpu`, `adult` or `tiny` (see the module docstring)."""
  from ml_collections import config_dict

  from sslax.config_utils import parse_arg
  from sslax.presets import base_config, mlp_head

  preset, options = parse_arg(arg, PRESETS, default="cpu", options=("data",))
  table = options.get("data", "adult")
  if table not in TABLES:
    raise ValueError(f"configs/scarf.py: data={table!r} is not one of {', '.join(TABLES)}.")
  c = base_config("scarf", "tiny" if preset == "tiny" else "cpu")
  c.preset = preset

  c.data.source = "csv" if table == "adult" else "sklearn"
  c.data.name = table
  c.data.table = ml_collections.ConfigDict()
  root = os.path.join(os.environ.get("SSLAX_TABULAR_DIR", os.path.join("..", "shared", "tabular")), "adult")
  c.data.table.train_path = os.path.join(root, "adult.data.csv") if table == "adult" else ""
  c.data.table.eval_path = os.path.join(root, "adult.test.csv") if table == "adult" else ""
  c.data.table.label_column = "outcome" if table == "adult" else "target"
  c.data.table.categorical = config_dict.placeholder(tuple)  # None: inferred (non-numeric columns).
  c.data.table.numeric = config_dict.placeholder(tuple)
  c.data.table.drop = ()
  c.data.table.missing_values = ("?", "")
  c.data.table.max_categories = 64  # One-hot size per categorical column (code 0: missing/unseen).
  c.data.table.test_fraction = 0.2  # scikit-learn tables: held-out fraction ...
  c.data.table.split_seed = 0  # ... drawn with this seed.

  width = 32 if preset == "tiny" else 256
  c.model.backbone = "tabular_mlp"
  c.model.mlp_dims = (width,) * (2 if preset == "tiny" else 4)
  c.model.max_categories = c.data.table.get_ref("max_categories")
  c.model.projector = mlp_head((width,), width, use_bn=False)

  c.optimizer.name = "adamw"  # Adam: weight decay 0.
  c.optimizer.base_learning_rate = 1e-3
  c.optimizer.lr_scaling = "none"
  c.optimizer.weight_decay = 0.0
  c.warmup_epochs = 0.0
  c.online_probe.enabled = True
  c.knn.k = 20
  c.knn.temperature = 0.1
  c.knn.image_size = None
  if preset == "adult":
    c.batch_size = 128
    c.total_epochs = 1000.0
    c.knn.every_steps = 20000
    c.checkpoint.every_steps = 20000
  elif preset == "cpu":
    c.batch_size = 512 if table == "adult" else 64  # The scikit-learn tables have 120-1,437 training rows.
    c.total_epochs = 100.0 if table == "adult" else 200.0
    c.log_every_steps = 100
    c.knn.every_steps = 2000
    c.checkpoint.every_steps = 2000
  return c.lock()
