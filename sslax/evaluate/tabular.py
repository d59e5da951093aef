"""The tabular evaluation protocol (SCARF, Bahri et al. 2022, section 4): with 1%, 10% and 100%
of the training labels, a linear (logistic) probe and fine-tuning of the pretrained encoder,
next to the same probe on the raw features and the same MLP trained from scratch.

* Labelled subsets are stratified draws (sslax.evaluate.subsets.stratified_subset: each class in
  proportion, as the test split is; a class-balanced subset would train a 50/50 classifier for
  Adult's 76/24 test split) from a seed, so each seed sees other labelled rows.
* Linear probe: softmax regression on standardised features, L2 chosen on 10% of the labelled
  rows (sslax.evaluate.linear.linear_probe).
* Fine-tuning and from-scratch: encoder + zero-initialised linear head, Adam, cross-entropy,
  on the labelled rows less a validation fifth; the parameters of the best validation accuracy
  (checked 30 times over the run) are scored on the test split. Pretrained and scratch runs
  share every setting but the initial encoder.
* Raw features: the encoder's own input (standardised numeric columns and one-hot categories).

Fine-tuning runs on the first local device (tables are small); features are extracted
sharded over the mesh like image features.
"""
from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sslax import parallel
from sslax.data.tabular import TableDataset, one_hot_inputs
from sslax.evaluate.features import extract_features
from sslax.evaluate.finetune import Classifier
from sslax.evaluate.linear import linear_probe
from sslax.evaluate.subsets import stratified_subset

TABULAR_L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # Wider than images': 1% of Adult is 326 rows.


def encoder_features(module, variables: dict, table: TableDataset, *, mesh: jax.sharding.Mesh | None = None,
                     batch_size: int = 4096) -> np.ndarray:
  """float32 (N, D) features of every row of `table` (evaluation mode), sharded over the mesh."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  fn = jax.jit(lambda v, x: module.apply(v, x, train=False), out_shardings=parallel.batch_sharding(mesh))
  return extract_features(fn, parallel.replicate(variables, mesh), table.inputs, batch_size, mesh)


def finetune_table(module, variables: dict | None, train: TableDataset, test: TableDataset, *, num_classes: int,
                   seed: int = 0, steps: int | None = None, batch_size: int = 128, learning_rate: float = 1e-3,
                   val_fraction: float = 0.2, num_checks: int = 30) -> dict:
  """Trains encoder + linear head on `train`'s labels; scores the best-validation parameters on `test`.

  Args:
    module: the encoder (e.g. sslax.models.tabular.TabularMLP).
    variables: pretrained {'params', ...} of the encoder, or None to train from scratch.
    train: labelled rows (a subset); `val_fraction` of them is held out for model selection.
    test: the test split.
    num_classes: label classes.
    seed: initialisation, validation split and minibatch order.
    steps: optimizer steps (default: 30 epochs of the fitting rows, at least 300).
    batch_size: minibatch rows (capped at the fitting rows).
    learning_rate: Adam's step size (SCARF fine-tunes with Adam at 1e-3).
    val_fraction: held-out part of `train` that picks the checkpoint.
    num_checks: validation evaluations over the run.

  Returns:
    {'top1': test accuracy, 'val_top1': best validation accuracy, 'steps', 'seconds'}.
  """
  start = time.time()
  rng = np.random.default_rng([seed, 7])
  perm = rng.permutation(len(train))
  n_val = max(1, int(round(val_fraction * len(train))))
  val, fit = train.subset(perm[:n_val]), train.subset(perm[n_val:])
  batch_size = min(batch_size, len(fit))
  steps = steps or max(300, int(np.ceil(30 * len(fit) / batch_size)))
  model = Classifier(backbone=module, num_classes=num_classes)
  params = model.init(jax.random.PRNGKey(seed), jax.tree.map(lambda a: jnp.asarray(a[:2]), fit.inputs),
                      train=False)["params"]
  if variables is not None:
    params = dict(params, backbone=variables["params"])
  tx = optax.adam(learning_rate)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  predict = jax.jit(lambda p, x: jnp.argmax(model.apply({"params": p}, x, train=False), axis=-1))

  def accuracy(p, table):
    hits = [np.asarray(predict(p, jax.tree.map(lambda a, i=i: a[i:i + 8192], table.inputs)))
            for i in range(0, len(table), 8192)]
    return float(np.mean(np.concatenate(hits) == table.labels))

  opt_state = tx.init(params)
  check_every = max(1, steps // num_checks)
  best_acc, best = -1.0, params
  per_epoch = max(1, len(fit) // batch_size)
  order = rng.permutation(len(fit))
  for i in range(steps):
    if i % per_epoch == 0 and i:
      order = rng.permutation(len(fit))
    idx = order[(i % per_epoch) * batch_size:(i % per_epoch + 1) * batch_size]
    params, opt_state = step(params, opt_state, jax.tree.map(lambda a: a[idx], fit.inputs), fit.labels[idx])
    if (i + 1) % check_every == 0 or i + 1 == steps:
      acc = accuracy(params, val)
      if acc > best_acc:
        best_acc, best = acc, jax.device_get(params)
  return {"top1": accuracy(best, test), "val_top1": best_acc, "steps": steps, "seconds": time.time() - start}


def tabular_protocol(module, variables: dict, train: TableDataset, test: TableDataset, *,
                     fractions: Sequence[float] = (0.01, 0.1, 1.0), seed: int = 0,
                     protocols: Sequence[str] = ("probe", "finetune", "raw_probe", "scratch"),
                     mesh: jax.sharding.Mesh | None = None) -> list[dict]:
  """Every (label fraction, protocol) of the tabular protocol for one seed.

  Args:
    module, variables: the pretrained encoder.
    train, test: the labelled training split and the test split.
    fractions: label fractions.
    seed: subset draw, probe split and fine-tuning seed.
    protocols: any of 'probe' (pretrained features), 'finetune', 'raw_probe' (raw features)
      and 'scratch' (the MLP from random initialisation).
    mesh: for feature extraction.

  Returns:
    One record per (fraction, protocol): {'fraction', 'protocol', 'seed', 'top1', 'seconds', ...}.
  """
  num_classes = train.num_classes
  max_categories = module.max_categories
  feats = {}
  if "probe" in protocols:
    feats["probe"] = (encoder_features(module, variables, train, mesh=mesh),
                      encoder_features(module, variables, test, mesh=mesh))
  if "raw_probe" in protocols:
    feats["raw_probe"] = (one_hot_inputs(train.numeric, train.categorical, max_categories),
                          one_hot_inputs(test.numeric, test.categorical, max_categories))
  records = []
  for fraction in fractions:
    idx = np.arange(len(train)) if fraction >= 1 else stratified_subset(train.labels, fraction, seed)
    labelled = train.subset(idx)
    for protocol in protocols:
      t0 = time.time()
      if protocol in feats:
        tr, te = feats[protocol]
        out = linear_probe(tr[idx], labelled.labels, te, test.labels, num_classes=num_classes,
                           l2_grid=TABULAR_L2_GRID, seed=seed)
        out = {"top1": out["top1"], "l2": out["l2"]}
      else:
        out = finetune_table(module, variables if protocol == "finetune" else None, labelled, test,
                             num_classes=num_classes, seed=seed)
      records.append(dict(out, fraction=fraction, protocol=protocol, seed=seed, labelled=len(idx),
                          seconds=time.time() - t0))
  return records
