"""Tables: CSV files and scikit-learn's bundled tables, encoded with training-split statistics.

A table becomes two arrays the MLP encoder (sslax.models.tabular) reads:

* `numeric` float32 (N, n_numeric): each numeric column standardised with the mean and
  standard deviation of the *training* split; a missing value becomes 0 (the training mean);
* `categorical` int32 (N, n_categorical): each categorical column's value as 1 + its position
  in the sorted training vocabulary; 0 for a missing value or one never seen in training.

Column types are inferred (a column whose every non-missing training value parses as a number
is numeric) unless `data.table.categorical` / `data.table.numeric` name them. The same
training statistics encode every split, so nothing about the test split leaks into training.

Training batches carry, besides the rows, one independent draw per (row, column) from that
column's empirical marginal over the training split ('donor_numeric', 'donor_categorical'):
the values SCARF's corruption substitutes (sslax/methods/scarf.py). The draws are a function
of (seed, step) for the global batch, so they do not depend on the process count either.

Tables are held in host memory (every process holds the whole training table, as for images in
memory); Adult is 2 MB encoded, and a table of 100 million rows x 50 columns would be 20 GB.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import os
from typing import Sequence

import numpy as np

from sslax.data.sources import DatasetNotFoundError

TABLE_SOURCES = ("csv", "sklearn")
SKLEARN_TABLES = ("breast_cancer", "wine", "digits", "iris")
DEFAULT_MISSING = ("?", "", "NA", "nan")
TABLE_DTYPES = {"numeric": np.float32, "categorical": np.int32}  # A table's column groups.
TABLE_KEYS = tuple(TABLE_DTYPES)
DONOR_KEYS = ("donor_numeric", "donor_categorical")


class TableError(ValueError):
  """A table file or its column settings are unusable (the message names the file or field)."""


@dataclasses.dataclass(frozen=True)
class TableSchema:
  """How columns are encoded, fitted on the training split only.

  Attributes:
    numeric: names of the numeric columns, in encoding order.
    categorical: names of the categorical columns, in encoding order.
    mean, std: float64 (n_numeric,) training statistics of the numeric columns.
    vocab: per categorical column, its sorted training values (code = 1 + position).
    label: the label column, or None (unlabelled).
    classes: the sorted training label values (label = position), () when unlabelled.
  """

  numeric: tuple[str, ...]
  categorical: tuple[str, ...]
  mean: np.ndarray
  std: np.ndarray
  vocab: tuple[tuple[str, ...], ...]
  label: str | None
  classes: tuple[str, ...]

  @property
  def max_vocab(self) -> int:
    """The largest category code + 1 (codes run from 0, missing, to len(vocab))."""
    return 1 + max((len(v) for v in self.vocab), default=0)


@dataclasses.dataclass(frozen=True)
class TableDataset:
  """An encoded table split in host memory (see the module docstring).

  Attributes:
    numeric: float32 (N, n_numeric) standardised numeric columns.
    categorical: int32 (N, n_categorical) category codes (0: missing or unseen).
    labels: int32 (N,), -1 where unknown.
    num_classes: number of label classes (0 if unlabelled).
    indices: int64 (N,) row positions in the split.
    schema: the training-split encoding.
    description: where the rows came from (for messages).
  """

  numeric: np.ndarray
  categorical: np.ndarray
  labels: np.ndarray
  num_classes: int
  indices: np.ndarray
  schema: TableSchema
  description: str = ""

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  @property
  def inputs(self) -> dict[str, np.ndarray]:
    """The encoder's inputs of every row: {'numeric', 'categorical'}."""
    return {"numeric": self.numeric, "categorical": self.categorical}

  @property
  def input_shapes(self) -> dict[str, tuple[int, ...]]:
    """Per-row shapes of the inputs (the model is initialised from them)."""
    return {"numeric": self.numeric.shape[1:], "categorical": self.categorical.shape[1:]}

  def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """{'numeric', 'categorical', 'label', 'index'} of the rows `idx`."""
    return {"numeric": self.numeric[idx], "categorical": self.categorical[idx], "label": self.labels[idx],
            "index": self.indices[idx].astype(np.int32)}

  def batch_rows(self, idx: np.ndarray, *, seed: int, step: int, global_batch: int, first: int) -> dict[str, np.ndarray]:
    """The training batch of the rows `idx` (rows first..first+len(idx) of step `step`'s global
    batch): their values and SCARF's corruption values (marginal_draws)."""
    return {**self.rows(idx), **self.marginal_draws(seed, step, global_batch, first, len(idx))}

  def marginal_draws(self, seed: int, step: int, global_batch: int, first: int, count: int) -> dict[str, np.ndarray]:
    """Independent draws from every column's empirical training marginal, for rows
    [first, first + count) of step `step`'s global batch of `global_batch` rows.

    Column j of row r takes the value of column j in training row u[r, j], with u uniform
    over the split and drawn from (seed, step) for the whole global batch, so any process
    count sees the same draws.

    Returns:
      {'donor_numeric': float32 (count, n_numeric), 'donor_categorical': int32 (count, n_categorical)}.
    """
    rng = np.random.default_rng([seed, 2, step])
    cols = self.numeric.shape[1] + self.categorical.shape[1]
    donors = rng.integers(0, len(self), size=(global_batch, cols))[first:first + count]
    n_num = self.numeric.shape[1]
    # A table without numeric (or categorical) columns takes (count, 0) arrays of its dtype.
    return {"donor_numeric": np.take_along_axis(self.numeric, donors[:, :n_num], axis=0),
            "donor_categorical": np.take_along_axis(self.categorical, donors[:, n_num:], axis=0)}

  def subset(self, idx: np.ndarray) -> "TableDataset":
    """The rows `idx` (labelled subsets for semi-supervised evaluation)."""
    return dataclasses.replace(self, numeric=self.numeric[idx], categorical=self.categorical[idx],
                               labels=self.labels[idx], indices=self.indices[idx])


def one_hot_inputs(numeric: np.ndarray, categorical: np.ndarray, max_categories: int) -> np.ndarray:
  """The encoder's input vector on the host: numeric columns, then each categorical column
  one-hot over `max_categories` codes (the 'raw features' baseline of the tabular protocol)."""
  onehot = np.eye(max_categories, dtype=np.float32)[categorical].reshape(len(categorical), -1)
  return np.concatenate([numeric.astype(np.float32), onehot], axis=1)


# ----------------------------------------------------------------------------- reading


def _clean_label(value: str) -> str:
  # UCI files (Adult's test split) end labels with a full stop: '>50K.' is '>50K'.
  return value.strip().rstrip(".")


@functools.lru_cache(maxsize=8)
def read_csv(path: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
  """(header, rows) of a CSV file with a header row; fields are stripped, blank lines skipped.

  Raises:
    DatasetNotFoundError: the file does not exist.
    TableError: a row has the wrong number of fields (names the file and line).
  """
  if not os.path.isfile(path):
    raise DatasetNotFoundError(f"Table {path!r} does not exist. Point --config.data.table.train_path / "
                               f"eval_path at CSV files with a header row (sslax never downloads data).")
  with open(path, newline="") as f:
    reader = csv.reader(f, skipinitialspace=True)
    header = tuple(h.strip() for h in next(reader, ()))
    if not header:
      raise TableError(f"Table {path!r} is empty; it needs a header row of column names.")
    rows = []
    for line, row in enumerate(reader, start=2):
      if not row or all(not v.strip() for v in row):
        continue
      if len(row) != len(header):
        raise TableError(f"{path}, line {line}: {len(row)} fields where the header has {len(header)}. "
                         f"Fix or remove that row.")
      rows.append(tuple(v.strip() for v in row))
  if not rows:
    raise TableError(f"Table {path!r} has a header but no rows.")
  return header, tuple(rows)


def _is_number(value: str) -> bool:
  try:
    float(value)
    return True
  except ValueError:
    return False


def fit_schema(header: Sequence[str], rows: Sequence[Sequence[str]], *, label: str | None,
               categorical: Sequence[str] | None = None, numeric: Sequence[str] | None = None,
               drop: Sequence[str] = (), missing: Sequence[str] = DEFAULT_MISSING, source: str = "") -> TableSchema:
  """The encoding of a table, from its training rows only.

  Args:
    header: column names.
    rows: training rows (strings).
    label: the label column (None: unlabelled).
    categorical, numeric: columns forced to a type; the others are inferred (numeric when
      every non-missing training value parses as a number).
    drop: columns to ignore.
    missing: strings that mean a missing value.
    source: the file, for messages.

  Returns:
    TableSchema.

  Raises:
    TableError: a named column does not exist, or a forced-numeric column holds text.
  """
  names = list(header)
  known = set(names)
  for field, cols in (("data.table.label_column", [label] if label else []),
                      ("data.table.categorical", categorical or ()), ("data.table.numeric", numeric or ()),
                      ("data.table.drop", drop)):
    for col in cols:
      if col not in known:
        raise TableError(f"Column {col!r} ({field}) is not in {source or 'the table'}; its columns are: "
                         f"{', '.join(names)}.")
  missing = set(missing)
  columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
  num, cat = [], []
  for name in names:
    if name == label or name in drop:
      continue
    present = [v for v in columns[name] if v not in missing]
    if numeric and name in numeric:
      bad = next((v for v in present if not _is_number(v)), None)
      if bad is not None:
        raise TableError(f"Column {name!r} is listed in data.table.numeric but holds {bad!r} in {source}.")
      num.append(name)
    elif (categorical and name in categorical) or not all(_is_number(v) for v in present):
      cat.append(name)
    else:
      num.append(name)
  values = np.array([[float(v) if v not in missing else np.nan for v in columns[n]] for n in num],
                    np.float64).reshape(len(num), -1)
  mean = np.nan_to_num(np.nanmean(values, axis=1)) if len(rows) else np.zeros(len(num))
  std = np.nan_to_num(np.nanstd(values, axis=1))
  std = np.where(std > 0, std, 1.0)
  vocab = tuple(tuple(sorted({v for v in columns[n] if v not in missing})) for n in cat)
  classes = tuple(sorted({_clean_label(v) for v in columns[label] if v not in missing})) if label else ()
  return TableSchema(numeric=tuple(num), categorical=tuple(cat), mean=mean, std=std, vocab=vocab, label=label,
                     classes=classes)


def encode(schema: TableSchema, header: Sequence[str], rows: Sequence[Sequence[str]], *,
           missing: Sequence[str] = DEFAULT_MISSING, description: str = "") -> TableDataset:
  """Encodes rows (of any split) with a training schema (see the module docstring)."""
  position = {name: i for i, name in enumerate(header)}
  for name in schema.numeric + schema.categorical + ((schema.label,) if schema.label else ()):
    if name not in position:
      raise TableError(f"Column {name!r} of the training table is missing from {description}.")
  missing = set(missing)
  n = len(rows)
  numeric = np.zeros((n, len(schema.numeric)), TABLE_DTYPES["numeric"])
  for j, name in enumerate(schema.numeric):
    col = position[name]
    raw = np.array([float(r[col]) if r[col] not in missing and _is_number(r[col]) else np.nan for r in rows])
    numeric[:, j] = np.nan_to_num((raw - schema.mean[j]) / schema.std[j])  # Missing -> 0, the training mean.
  categorical = np.zeros((n, len(schema.categorical)), TABLE_DTYPES["categorical"])
  for j, name in enumerate(schema.categorical):
    col, codes = position[name], {v: i + 1 for i, v in enumerate(schema.vocab[j])}
    categorical[:, j] = [codes.get(r[col], 0) for r in rows]
  labels = np.full((n,), -1, np.int32)
  if schema.label:
    col, classes = position[schema.label], {c: i for i, c in enumerate(schema.classes)}
    labels[:] = [classes.get(_clean_label(r[col]), -1) for r in rows]
  return TableDataset(numeric=numeric, categorical=categorical, labels=labels, num_classes=len(schema.classes),
                      indices=np.arange(n, dtype=np.int64), schema=schema, description=description)


def _sklearn_table(name: str, test_fraction: float, split_seed: int):
  """(header, train rows, test rows) of a scikit-learn bundled table, split by a seeded permutation."""
  from sklearn import datasets

  if name not in SKLEARN_TABLES:
    raise TableError(f"Unknown scikit-learn table {name!r} (config.data.name); valid choices: "
                     f"{', '.join(SKLEARN_TABLES)}.")
  bunch = getattr(datasets, f"load_{name}")()
  header = tuple(str(f) for f in bunch.feature_names) + ("target",)
  rows = [tuple(repr(float(v)) for v in x) + (str(int(y)),) for x, y in zip(bunch.data, bunch.target)]
  perm = np.random.default_rng(split_seed).permutation(len(rows))
  n_test = int(round(test_fraction * len(rows)))
  return header, [rows[i] for i in np.sort(perm[n_test:])], [rows[i] for i in np.sort(perm[:n_test])]


def load_table(data_cfg, split: str) -> TableDataset:
  """Loads `split` of the table that `data_cfg` describes, encoded with training statistics.

  Args:
    data_cfg: config.data with `source` 'csv' (data.table.train_path / eval_path) or 'sklearn'
      (data.name, data.table.test_fraction), and data.table's label_column, categorical,
      numeric, drop and missing_values.
    split: data.train_split reads the training table; any other split the evaluation table.

  Returns:
    TableDataset (the whole split; every process holds it).
  """
  t = data_cfg.table
  missing = tuple(t.get("missing_values") or DEFAULT_MISSING)
  train = split == data_cfg.train_split
  if data_cfg.source == "sklearn":
    header, train_rows, test_rows = _sklearn_table(data_cfg.name, t.get("test_fraction", 0.2),
                                                   t.get("split_seed", 0))
    label, source = "target", f"scikit-learn {data_cfg.name}"
    rows, description = (train_rows, f"{source} (train)") if train else (test_rows, f"{source} (test)")
  elif data_cfg.source == "csv":
    if not t.get("train_path"):
      raise TableError("data.source='csv' needs --config.data.table.train_path (a CSV file with a header row).")
    header, train_rows = read_csv(t.train_path)
    label, source = t.get("label_column"), t.train_path
    if train:
      rows, description = train_rows, t.train_path
    else:
      if not t.get("eval_path"):
        raise DatasetNotFoundError(f"No table for split {split!r}: set --config.data.table.eval_path "
                                   f"(or disable the kNN monitor with --config.knn.every_steps=0 --config.knn.at_end=False).")
      eval_header, rows = read_csv(t.eval_path)
      if eval_header != header:
        raise TableError(f"{t.eval_path} has columns {eval_header}, but the training table {t.train_path} has "
                         f"{header}; both need the same header row.")
      description = t.eval_path
  else:
    raise TableError(f"Unknown table source {data_cfg.source!r}; valid choices: {', '.join(TABLE_SOURCES)}.")
  schema = fit_schema(header, train_rows, label=label, categorical=t.get("categorical"), numeric=t.get("numeric"),
                      drop=t.get("drop") or (), missing=missing, source=source)
  max_categories = t.get("max_categories")
  if max_categories and schema.max_vocab > max_categories:
    worst = max(range(len(schema.vocab)), key=lambda j: len(schema.vocab[j]))
    raise TableError(f"Column {schema.categorical[worst]!r} has {len(schema.vocab[worst])} categories, more than "
                     f"data.table.max_categories - 1 = {max_categories - 1}; raise --config.data.table.max_categories "
                     f"to at least {schema.max_vocab}.")
  return encode(schema, header, rows, missing=missing, description=description)
