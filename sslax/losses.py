"""Self-supervised losses with explicit cross-device collectives.

Functions here run inside `jax.shard_map` over the mesh's data axis: each device
holds its local rows, and `axis_name` names the axis to gather negatives over. With
`axis_name=None` they run on a single device and the local batch is the global one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis` (eps keeps the gradient finite at zero)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  # tiled all_gather: (n_local, d) -> (n_devices * n_local, d) in device order. Its transpose
  # (psum_scatter) sends each device the gradient of every row it contributed.
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _device_offset(n_local: int, axis_name: str | None) -> jax.Array:
  return jnp.int32(0) if axis_name is None else jax.lax.axis_index(axis_name) * n_local


def global_sum(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Sum over devices (identity on one device)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def nt_xent(z1: jax.Array, z2: jax.Array, *, temperature: float,
            axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """NT-Xent (SimCLR) loss over the global batch, negatives from every device.

  With N global examples there are 2N embeddings [Z1; Z2]. Each row's positive is the
  other view of the same example; the other 2N - 2 rows are negatives; its own
  similarity is masked out. Each device computes the logits of its own 2n rows against
  all 2N gathered columns, and the per-row losses are summed across devices, so the
  returned loss is the same global mean on every device and its gradient is exact.

  Args:
    z1: (n_local, d) projections of view 1 of this device's examples (unnormalised).
    z2: (n_local, d) projections of view 2.
    temperature: softmax temperature tau.
    axis_name: mesh axis over which the batch is split, or None on one device.

  Returns:
    (loss, metrics): loss is the mean over all 2N rows of the global batch; metrics has
    'contrastive_top1', the fraction of rows whose positive has the highest logit.
  """
  n_local = z1.shape[0]
  q = l2_normalize(jnp.concatenate([z1, z2], axis=0).astype(jnp.float32))  # (2n, d)
  k1 = _gather(q[:n_local], axis_name)
  k2 = _gather(q[n_local:], axis_name)
  n_global = k1.shape[0]
  keys = jnp.concatenate([k1, k2], axis=0)  # (2N, d), global order [view1; view2]
  logits = (q @ keys.T) / temperature  # (2n, 2N)

  offset = _device_offset(n_local, axis_name)
  local = jnp.arange(n_local) + offset
  self_col = jnp.concatenate([local, local + n_global])
  pos_col = jnp.concatenate([local + n_global, local])
  rows = jnp.arange(2 * n_local)
  # A large finite value rather than -inf keeps every intermediate of the backward pass finite.
  logits = logits.at[rows, self_col].set(-1e9)
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  row_loss = -log_prob[rows, pos_col]
  correct = (jnp.argmax(logits, axis=-1) == pos_col).astype(jnp.float32)

  denom = 2.0 * n_global
  loss = global_sum(jnp.sum(row_loss), axis_name) / denom
  top1 = global_sum(jnp.sum(correct), axis_name) / denom
  return loss, {"contrastive_top1": top1}


def embedding_std(z: jax.Array, axis_name: str | None = None) -> jax.Array:
  """Mean per-dimension std of L2-normalised embeddings over the global batch.

  A collapse monitor (Chen & He 2021): about 1/sqrt(d) when embeddings spread over the
  sphere, near 0 when they collapse to a point.

  Args:
    z: (n_local, d) embeddings.
    axis_name: mesh axis of the batch, or None.

  Returns:
    Scalar, identical on every device.
  """
  z = l2_normalize(z.astype(jnp.float32))
  n = global_sum(jnp.float32(z.shape[0]), axis_name)
  mean = global_sum(jnp.sum(z, axis=0), axis_name) / n
  var = global_sum(jnp.sum(jnp.square(z - mean), axis=0), axis_name) / n
  return jnp.mean(jnp.sqrt(jnp.maximum(var, 0.0)))


def _global_count(n_local: int, axis_name: str | None) -> jax.Array:
  return global_sum(jnp.asarray(n_local, jnp.float32), axis_name)


def _global_standardize(z: jax.Array, axis_name: str | None, eps: float = 1e-5) -> jax.Array:
  """(z - mean) / std per dimension with the mean and (biased) variance of the global batch."""
  n = _global_count(z.shape[0], axis_name)
  mean = global_sum(z.sum(axis=0), axis_name) / n
  var = global_sum(jnp.square(z - mean).sum(axis=0), axis_name) / n
  return (z - mean) / jnp.sqrt(var + eps)


def barlow_twins(z1: jax.Array, z2: jax.Array, *, lambd: float = 5e-3,
                 axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Barlow Twins (Zbontar et al. 2021) with global-batch statistics.

  Each embedding dimension is standardised over the whole global batch, and the
  cross-correlation C = z1n^T z2n / N sums over all devices (a psum, differentiated exactly),
  so the loss equals the single-device loss on the global batch.

  Args:
    z1, z2: (n_local, d) projections of the two views.
    lambd: weight of the off-diagonal (redundancy-reduction) term.
    axis_name: data axis, or None on one device.

  Returns:
    (sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2, metrics).
  """
  n = _global_count(z1.shape[0], axis_name)
  a = _global_standardize(z1.astype(jnp.float32), axis_name)
  b = _global_standardize(z2.astype(jnp.float32), axis_name)
  c = global_sum(jnp.einsum("ni,nj->ij", a, b, precision=jax.lax.Precision.HIGHEST), axis_name) / n
  diag = jnp.diagonal(c)
  on_diag = jnp.sum(jnp.square(1.0 - diag))
  off_diag = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diag))
  return on_diag + lambd * off_diag, {"bt_on_diag": on_diag, "bt_off_diag": off_diag}


def vicreg(z1: jax.Array, z2: jax.Array, *, sim_weight: float = 25.0, var_weight: float = 25.0,
           cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4,
           axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """VICReg (Bardes et al. 2022) with variance and covariance over the global batch.

  Args:
    z1, z2: (n_local, d) projections of the two views.
    sim_weight, var_weight, cov_weight: the loss weights (lambda, mu, nu of the paper).
    gamma: target standard deviation of every dimension.
    eps: added to the variance inside the square root.
    axis_name: data axis, or None on one device.

  Returns:
    (loss, metrics with the three unweighted terms).
  """
  z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
  n = _global_count(z1.shape[0], axis_name)
  d = z1.shape[1]
  invariance = global_sum(jnp.sum(jnp.square(z1 - z2)), axis_name) / (n * d)

  def var_cov(z):
    mean = global_sum(z.sum(axis=0), axis_name) / n
    zc = z - mean
    # Unbiased (N - 1) covariance, as in the paper's implementation.
    cov = global_sum(jnp.einsum("ni,nj->ij", zc, zc, precision=jax.lax.Precision.HIGHEST), axis_name) / (n - 1)
    std = jnp.sqrt(jnp.diagonal(cov) + eps)
    variance = jnp.mean(jax.nn.relu(gamma - std))
    covariance = (jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(jnp.diagonal(cov)))) / d
    return variance, covariance

  v1, c1 = var_cov(z1)
  v2, c2 = var_cov(z2)
  variance, covariance = (v1 + v2) / 2, c1 + c2
  loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
  return loss, {"vicreg_invariance": invariance, "vicreg_variance": variance, "vicreg_covariance": covariance}
