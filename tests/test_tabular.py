"""Tables and SCARF: CSV encoding with training-only statistics, marginal draws, the corruption,
and the tabular evaluation protocol."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import load_config

from sslax import augment, parallel
from sslax.config_utils import ConfigError
from sslax.data import load_dataset, train_batches
from sslax.data.sources import DatasetNotFoundError
from sslax.data.tabular import TableError, fit_schema, read_csv
from sslax.methods import METHODS
from sslax.methods.scarf import corruption_mask
from sslax.step import build_setup

ADULT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tabular", "adult")

TRAIN_CSV = """age, city, income, label
20, paris, 1.5, yes
30, rome, ?, no
40, paris, 2.5, yes.
, oslo, 3.5, no
"""
TEST_CSV = """age, city, income, label
100, lima, 10.0, yes.
?, rome, 1.5, no
"""


def _write_tables(tmp_path, train=TRAIN_CSV, test=TEST_CSV):
  read_csv.cache_clear()
  (tmp_path / "train.csv").write_text(train)
  (tmp_path / "test.csv").write_text(test)
  return str(tmp_path / "train.csv"), str(tmp_path / "test.csv")


def _table_config(tmp_path, **overrides):
  train, test = _write_tables(tmp_path)
  config, _ = load_config("scarf", **{"data.table.train_path": train, "data.table.eval_path": test,
                                      "data.table.label_column": "label", **overrides})
  return config


def test_encoding_uses_training_statistics_only(tmp_path):
  config = _table_config(tmp_path)
  train = load_dataset(config.data, "train")
  test = load_dataset(config.data, "test")
  schema = train.schema
  assert schema.numeric == ("age", "income") and schema.categorical == ("city",)
  # Mean and std of the training values present ('?' and '' are missing), not of the test split.
  np.testing.assert_allclose(schema.mean, [30.0, 2.5])
  np.testing.assert_allclose(schema.std, [np.std([20, 30, 40]), np.std([1.5, 2.5, 3.5])])
  np.testing.assert_array_equal(test.schema.mean, schema.mean)  # The test split is encoded with them.
  np.testing.assert_allclose(test.numeric[0], [(100 - 30) / np.std([20, 30, 40]), (10 - 2.5) / np.std([1.5, 2.5, 3.5])],
                             rtol=1e-6)
  assert train.numeric[3, 0] == 0 and train.numeric[1, 1] == 0 and test.numeric[1, 0] == 0  # Missing: the mean.
  assert schema.vocab == (("oslo", "paris", "rome"),)
  np.testing.assert_array_equal(train.categorical[:, 0], [2, 3, 2, 1])
  np.testing.assert_array_equal(test.categorical[:, 0], [0, 3])  # 'lima' was never seen in training: code 0.
  # Labels: the sorted training classes; UCI's trailing full stop ('yes.') is the same class.
  assert schema.classes == ("no", "yes")
  np.testing.assert_array_equal(train.labels, [1, 0, 1, 0])
  np.testing.assert_array_equal(test.labels, [1, 0])


def test_column_types_can_be_forced_and_errors_name_the_field_or_file(tmp_path):
  train, _ = _write_tables(tmp_path)
  header, rows = read_csv(train)
  schema = fit_schema(header, rows, label="label", categorical=("age",))
  assert schema.categorical == ("age", "city") and schema.numeric == ("income",)
  with pytest.raises(TableError, match=r"'nope' \(data.table.label_column\) is not in"):
    fit_schema(header, rows, label="nope")
  with pytest.raises(TableError, match=r"'city' is listed in data.table.numeric"):
    fit_schema(header, rows, label="label", numeric=("city",))
  (tmp_path / "bad.csv").write_text("a, b\n1, 2\n3\n")
  with pytest.raises(TableError, match=r"bad.csv, line 3: 1 fields where the header has 2"):
    read_csv(str(tmp_path / "bad.csv"))
  config = _table_config(tmp_path, **{"data.table.train_path": str(tmp_path / "missing.csv")})
  with pytest.raises(DatasetNotFoundError, match=r"missing.csv.*data.table.train_path"):
    load_dataset(config.data, "train")
  config = _table_config(tmp_path, **{"data.table.max_categories": 3})
  with pytest.raises(TableError, match=r"'city' has 3 categories.*max_categories to at least 4"):
    load_dataset(config.data, "train")


def test_image_methods_refuse_tables_and_scarf_refuses_images():
  config, _ = load_config("simclr", **{"data.source": "csv"})
  with pytest.raises(ConfigError, match="simclr learns from images.*scarf"):
    METHODS["simclr"].validate_config(config)
  config, _ = load_config("scarf", **{"data.source": "tfds"})
  with pytest.raises(ConfigError, match="scarf learns from tables"):
    METHODS["scarf"].validate_config(config)


@pytest.mark.parametrize("rate, columns", [(0.6, 14), (0.3, 10), (1.0, 5)])
def test_corruption_replaces_exactly_the_rate_of_each_rows_columns(rate, columns):
  keys = jax.random.split(jax.random.PRNGKey(3), 4000)
  mask = np.asarray(corruption_mask(keys, columns, rate))
  np.testing.assert_array_equal(mask.sum(axis=1), round(rate * columns))
  # Every column is equally likely to be chosen (a uniformly random subset).
  np.testing.assert_allclose(mask.mean(axis=0), round(rate * columns) / columns, atol=0.035)


def _adult_config(**overrides):
  if not os.path.isdir(ADULT):
    pytest.skip(f"UCI Adult not found at {ADULT}")
  config, _ = load_config("scarf", **{"data.table.train_path": os.path.join(ADULT, "adult.data.csv"),
                                      "data.table.eval_path": os.path.join(ADULT, "adult.test.csv"), **overrides})
  return config


def test_adult_loads_with_its_columns_classes_and_missing_values():
  config = _adult_config()
  train, test = load_dataset(config.data, "train"), load_dataset(config.data, "test")
  assert (len(train), len(test)) == (32561, 16281)
  assert len(train.schema.numeric) == 6 and len(train.schema.categorical) == 8
  assert train.schema.classes == ("<=50K", ">50K") and (test.labels >= 0).all()  # '>50K.' in the test file.
  assert 0.23 < train.labels.mean() < 0.25  # 24% earn >50K.
  workclass = train.schema.categorical.index("workclass")
  assert (train.categorical[:, workclass] == 0).sum() == 1836  # '?' rows in the training file.
  np.testing.assert_allclose(train.numeric.mean(axis=0), 0, atol=1e-4)
  np.testing.assert_allclose(train.numeric.std(axis=0), 1, atol=1e-4)


def test_scarf_corrupts_with_values_from_the_same_training_column_and_keeps_the_rest():
  config = _adult_config(**{"batch_size": 256})
  train = load_dataset(config.data, "train")
  setup = build_setup(config, len(train), parallel.make_mesh(jax.devices()[:1]), input_shapes=train.input_shapes)
  _, batch = next(train_batches(train, batch_size=256, seed=0, start_step=5))
  view = jax.jit(lambda b: setup.method.corrupted_view(b, jnp.int32(5), None))(
      {k: jnp.asarray(v) for k, v in batch.items()})
  corrupted = np.concatenate([np.asarray(view["numeric"]), np.asarray(view["categorical"])], axis=1)
  original = np.concatenate([batch["numeric"], batch["categorical"]], axis=1)
  donors = np.concatenate([batch["donor_numeric"], batch["donor_categorical"]], axis=1)
  table = np.concatenate([train.numeric, train.categorical], axis=1)
  keys = jax.vmap(lambda k: jax.random.fold_in(k, 0x5CA7))(augment.example_keys(config.seed, jnp.int32(5),
                                                                                jnp.arange(256)))
  mask = np.asarray(corruption_mask(keys, 14, 0.6))
  assert (mask.sum(axis=1) == 8).all()
  np.testing.assert_array_equal(corrupted[~mask], original[~mask])  # The other values are unchanged.
  np.testing.assert_array_equal(corrupted[mask], donors[mask])
  for j in range(14):  # Every substituted value is a training value of the same column.
    assert np.isin(corrupted[mask[:, j], j], table[:, j]).all()
  assert (corrupted != original)[mask].mean() > 0.5  # Most substitutions change the value.


def test_marginal_draws_follow_the_training_marginals_and_ignore_the_process_count():
  config = _adult_config()
  train = load_dataset(config.data, "train")
  whole = train.marginal_draws(seed=1, step=7, global_batch=4096, first=0, count=4096)
  halves = [train.marginal_draws(seed=1, step=7, global_batch=4096, first=p * 2048, count=2048) for p in range(2)]
  for key in whole:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
  # Category frequencies of the draws match the column's training frequencies.
  for j in range(train.categorical.shape[1]):
    expected = np.bincount(train.categorical[:, j], minlength=65) / len(train)
    drawn = np.bincount(whole["donor_categorical"][:, j], minlength=65) / 4096
    assert np.abs(expected - drawn).max() < 0.03
  # Each column is drawn independently (the product of the marginals, not whole donor rows): in
  # the data almost every 'Husband' is 'Male'; among independent draws a third are 'Female'.
  schema = train.schema
  rel, sex = schema.categorical.index("relationship"), schema.categorical.index("sex")
  husband = whole["donor_categorical"][:, rel] == 1 + schema.vocab[rel].index("Husband")
  female = 1 + schema.vocab[sex].index("Female")
  assert (train.categorical[train.categorical[:, rel] == 1 + schema.vocab[rel].index("Husband"),
                            sex] == female).mean() < 0.01
  assert 0.25 < (whole["donor_categorical"][husband, sex] == female).mean() < 0.42
  other = train.marginal_draws(seed=1, step=8, global_batch=4096, first=0, count=4096)
  assert not np.array_equal(other["donor_numeric"], whole["donor_numeric"])  # Each step draws afresh.


def test_stratified_subsets_keep_the_class_frequencies():
  from sslax.evaluate.subsets import stratified_subset

  labels = np.array([0] * 760 + [1] * 240)
  idx = stratified_subset(labels, 0.1, seed=3)
  assert len(idx) == 100 and (labels[idx] == 1).sum() == 24 and len(np.unique(idx)) == 100
  assert not np.array_equal(idx, stratified_subset(labels, 0.1, seed=4))


def test_tabular_protocol_fine_tunes_from_the_given_encoder_or_from_scratch(tmp_path):
  from sslax.data.tabular import encode, fit_schema
  from sslax.evaluate.tabular import finetune_table, tabular_protocol
  from sslax.models.tabular import TabularMLP

  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 3))
  colour = rng.choice(["red", "blue"], size=600)
  y = ((x[:, 0] + (colour == "red")) > 0.5).astype(int)  # Needs a numeric and a categorical column.
  header = ("a", "b", "c", "colour", "y")
  rows = [tuple(f"{v:.4f}" for v in x[i]) + (colour[i], str(y[i])) for i in range(600)]
  schema = fit_schema(header, rows[:400], label="y")
  train, test = encode(schema, header, rows[:400]), encode(schema, header, rows[400:])
  module = TabularMLP(hidden_dims=(16, 16), max_categories=4)
  variables = module.init(jax.random.PRNGKey(1), {k: v[:2] for k, v in train.inputs.items()})
  scratch = finetune_table(module, None, train, test, num_classes=2, seed=0, steps=300)
  assert scratch["top1"] > 0.9
  # The given encoder is the starting point: an all-zero encoder has no gradient below its head
  # (ReLU of zeros), so it can only learn the majority class; a random one learns the task.
  dead = finetune_table(module, jax.tree.map(jnp.zeros_like, variables), train, test, num_classes=2, seed=0,
                        steps=300)
  assert dead["top1"] == pytest.approx(max(test.labels.mean(), 1 - test.labels.mean()))
  assert finetune_table(module, variables, train, test, num_classes=2, seed=0, steps=300)["top1"] > 0.9
  records = tabular_protocol(module, variables, train, test, fractions=(1.0,), seed=0)
  assert [(r["protocol"], r["labelled"]) for r in records] == [("probe", 400), ("finetune", 400),
                                                                ("raw_probe", 400), ("scratch", 400)]
  raw = next(r for r in records if r["protocol"] == "raw_probe" and r["fraction"] == 1.0)
  assert raw["top1"] > 0.9  # The raw features hold the answer linearly.


def test_scarf_trains_end_to_end_on_a_scikit_learn_table_and_the_image_protocols_refuse_it(tmp_path):
  from sslax import train
  from sslax.evaluate.pretrained import load_pretrained
  from sslax.evaluate.run import evaluate
  from sslax.evaluate.tabular import encoder_features

  config, _ = load_config("scarf", **{"data.source": "sklearn", "data.name": "wine", "data.table.train_path": "",
                                      "data.table.label_column": "target", "knn.at_end": True, "knn.k": 5})
  workdir = str(tmp_path / "w")
  summary = train.train_and_evaluate(config, workdir, mesh=parallel.make_mesh(jax.devices()[:2]))
  assert summary["step"] == 6 and np.isfinite(summary["loss"])
  assert summary["knn_top1"] > 0.6  # Wine's three classes are nearly separable, even by a random encoder.
  backbone = load_pretrained(workdir)
  test = load_dataset(config.data, "test")
  feats = encoder_features(backbone.module, backbone.variables, test)
  assert feats.shape == (len(test), 32) and len(test) == 36
  eval_config, _ = load_config("eval", "knn", **{"pretrained_workdir": workdir})
  with pytest.raises(ValueError, match="tabular encoder.*tabular_protocol"):
    evaluate(eval_config, str(tmp_path / "eval"))
