"""Frozen-feature linear probe: multinomial logistic regression with an L2 sweep.

Features are computed once (evaluation transform, no augmentation), standardised with
the training statistics, and a softmax classifier is fitted full-batch with optax's
L-BFGS. The L2 strength is chosen on a held-out part of the training split, then the
classifier is refitted on the whole training split and scored on the test split.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """(x - mean) / std with the statistics of `train`, applied to train and every other array."""
  mean = train.mean(axis=0, keepdims=True)
  std = train.std(axis=0, keepdims=True) + 1e-6
  return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float,
                            max_iters: int = 300) -> dict[str, jax.Array]:
  """Softmax regression minimising mean cross-entropy + l2/2 * |W|^2 with L-BFGS.

  Args:
    features: float (N, D).
    labels: int (N,) in [0, num_classes).
    num_classes: number of classes.
    l2: L2 strength on the weights (not the bias).
    max_iters: L-BFGS iterations (it stops earlier when the gradient norm is below 1e-6).

  Returns:
    {'w': (D, C), 'b': (C,)}.
  """
  x = jnp.asarray(features, jnp.float32)
  y = jnp.asarray(labels, jnp.int32)

  def objective(params):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2 * jnp.sum(jnp.square(params["w"]))

  return _minimize(objective, {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))},
                   max_iters)


def _minimize(objective, params, max_iters: int):
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry):
    params, state, i = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=objective)
    return optax.apply_updates(params, updates), state, i + 1

  def keep_going(carry):
    _, state, i = carry
    grad = optax.tree.get(state, "grad")
    return (i == 0) | ((i < max_iters) & (optax.tree.norm(grad) >= 1e-6))

  params, _, _ = jax.jit(lambda p: jax.lax.while_loop(keep_going, step, (p, opt.init(p), 0)))(params)
  return params


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
  """Fraction of rows whose label is among the k largest logits, for each k."""
  order = np.argsort(-logits, axis=1)
  return {k: float(np.mean(np.any(order[:, :k] == labels[:, None], axis=1))) for k in ks}


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, *, num_classes: int, l2_grid: Sequence[float] = DEFAULT_L2_GRID,
                 val_fraction: float = 0.1, seed: int = 0, max_iters: int = 300) -> dict:
  """Linear probe with the L2 strength chosen on held-out training examples.

  Args:
    train_features, train_labels: the training split (features (N, D), labels (N,)).
    test_features, test_labels: the test split.
    num_classes: number of classes.
    l2_grid: L2 strengths to try.
    val_fraction: part of the training split held out to choose L2.
    seed: seed of the held-out split.
    max_iters: L-BFGS iterations per fit.

  Returns:
    dict with 'top1', 'top5' on the test split, 'l2' (chosen), 'val_top1' per L2, 'train_top1'.
  """
  train_labels = np.asarray(train_labels)
  test_labels = np.asarray(test_labels)
  perm = np.random.default_rng(seed).permutation(len(train_labels))
  n_val = max(1, int(len(perm) * val_fraction))
  val_idx, fit_idx = perm[:n_val], perm[n_val:]

  fit_x, val_x = standardize(train_features[fit_idx], train_features[val_idx])
  val_top1 = {}
  for l2 in l2_grid:
    p = fit_logistic_regression(fit_x, train_labels[fit_idx], num_classes, l2, max_iters)
    val_top1[float(l2)] = topk_accuracy(np.asarray(val_x @ p["w"] + p["b"]), train_labels[val_idx], (1,))[1]
  best = max(val_top1, key=lambda l2: (val_top1[l2], l2))  # Ties: the stronger regulariser.

  train_x, test_x = standardize(train_features, test_features)
  p = fit_logistic_regression(train_x, train_labels, num_classes, best, max_iters)
  test_acc = topk_accuracy(np.asarray(test_x @ p["w"] + p["b"]), test_labels, (1, 5))
  train_acc = topk_accuracy(np.asarray(train_x @ p["w"] + p["b"]), train_labels, (1,))
  return {"top1": test_acc[1], "top5": test_acc[5], "l2": best, "val_top1": val_top1, "train_top1": train_acc[1]}
