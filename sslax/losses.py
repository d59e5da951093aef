"""Self-supervised losses with explicit cross-device collectives.

Functions here run inside `jax.shard_map` over the mesh's data axis: each device
holds its local rows, and `axis_name` names the axis to gather negatives over (the
collectives live in sslax.parallel). With `axis_name=None` they run on a single device and
the local batch is the global one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax.parallel import all_gather, device_offset, global_count, global_mean, global_sum


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis` (eps keeps the gradient finite at zero)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


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
  k1 = all_gather(q[:n_local], axis_name)
  k2 = all_gather(q[n_local:], axis_name)
  n_global = k1.shape[0]
  keys = jnp.concatenate([k1, k2], axis=0)  # (2N, d), global order [view1; view2]
  logits = (q @ keys.T) / temperature  # (2n, 2N)

  offset = device_offset(n_local, axis_name)
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


def _global_standardize(z: jax.Array, axis_name: str | None, eps: float = 1e-5) -> jax.Array:
  """(z - mean) / std per dimension with the mean and (biased) variance of the global batch."""
  n = global_count(z.shape[0], axis_name)
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
  n = global_count(z1.shape[0], axis_name)
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
  n = global_count(z1.shape[0], axis_name)
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


def negative_cosine(p: jax.Array, z: jax.Array, axis_name: str | None = None) -> jax.Array:
  """Global-batch mean of -cos(p_i, z_i); z is used as given (callers stop its gradient).

  SimSiam's D(p, z) (Chen & He 2021); BYOL's normalised regression is 2 + 2 * this.
  """
  cos = jnp.sum(l2_normalize(p.astype(jnp.float32)) * l2_normalize(z.astype(jnp.float32)), axis=-1)
  return -global_mean(cos, axis_name)


def info_nce_with_queue(q: jax.Array, k: jax.Array, queue: jax.Array, *, temperature: float,
                        axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MoCo v1/v2 InfoNCE: each query's positive is its key, the negatives the queue.

  Args:
    q: (n_local, d) queries (unnormalised).
    k: (n_local, d) keys of the same examples from the momentum encoder (gradient stopped).
    queue: (K, d) L2-normalised keys of earlier batches, identical on every device.
    temperature: tau.
    axis_name: data axis, or None.

  Returns:
    (global-batch mean cross-entropy with the positive at index 0, {'contrastive_top1'}).
  """
  q = l2_normalize(q.astype(jnp.float32))
  k = l2_normalize(k.astype(jnp.float32))
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  logits = jnp.concatenate([positive, q @ queue.T], axis=1) / temperature
  row_loss = -jax.nn.log_softmax(logits, axis=-1)[:, 0]
  correct = (jnp.argmax(logits, axis=-1) == 0).astype(jnp.float32)
  return global_mean(row_loss, axis_name), {"contrastive_top1": global_mean(correct, axis_name)}


def info_nce_gathered(q: jax.Array, k: jax.Array, *, temperature: float,
                      axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MoCo v3's contrastive loss: queries against the keys of the whole global batch.

  Keys are all-gathered; the positive of local row i is global key offset + i, offset being
  this device's position times n_local. Scaled by 2 * tau as in the paper's code.

  Args:
    q: (n_local, d) queries; k: (n_local, d) keys (gradient stopped by the caller).
    temperature: tau.
    axis_name: data axis, or None.

  Returns:
    (global-batch mean of 2 tau * cross-entropy, {'contrastive_top1'}).
  """
  q = l2_normalize(q.astype(jnp.float32))
  keys = all_gather(l2_normalize(k.astype(jnp.float32)), axis_name)
  logits = q @ keys.T / temperature
  labels = device_offset(q.shape[0], axis_name) + jnp.arange(q.shape[0])
  row_loss = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=1)[:, 0]
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return 2.0 * temperature * global_mean(row_loss, axis_name), {"contrastive_top1": global_mean(correct, axis_name)}


def sinkhorn(scores: jax.Array, *, epsilon: float, iterations: int, axis_name: str | None = None,
             weights: jax.Array | None = None) -> jax.Array:
  """Sinkhorn-Knopp equipartition of samples over prototypes (SwAV, Caron et al. 2020).

  Q = exp(scores / epsilon) is alternately normalised so that every prototype receives the
  same total mass (sums over the samples of *all* devices, a psum) and every sample has
  mass 1/B; the result is rescaled so each sample's assignment sums to 1.

  Args:
    scores: (n_local, K) prototype scores of this device's samples.
    epsilon: entropic regularisation.
    iterations: normalisation rounds.
    axis_name: data axis, or None.
    weights: optional (n_local,) 0/1 mask; masked samples get no mass and do not count in B
      (used for the not-yet-filled part of a feature queue).

  Returns:
    (n_local, K) soft assignments (no gradient), rows summing to 1 for unmasked samples.
  """
  scores = jax.lax.stop_gradient(scores.astype(jnp.float32))
  w = jnp.ones(scores.shape[0], jnp.float32) if weights is None else weights.astype(jnp.float32)
  # Subtracting the global max leaves every normalised quantity unchanged and keeps exp finite.
  top = jnp.max(scores)
  top = top if axis_name is None else jax.lax.pmax(top, axis_name)
  q = jnp.exp((scores - top) / epsilon) * w[:, None]
  num_prototypes = scores.shape[1]
  num_samples = global_sum(jnp.sum(w), axis_name)
  q = q / global_sum(jnp.sum(q), axis_name)
  for _ in range(iterations):
    q = q / global_sum(jnp.sum(q, axis=0, keepdims=True), axis_name) / num_prototypes
    q = q / jnp.maximum(jnp.sum(q, axis=1, keepdims=True), 1e-30) * w[:, None] / num_samples
  return q * num_samples


def swapped_prediction(scores: list[jax.Array], assignments: dict[int, jax.Array], *, temperature: float,
                       axis_name: str | None = None) -> jax.Array:
  """SwAV's swapped prediction: every view predicts the code of each assigned view.

  Args:
    scores: per view, (n_local, K) prototype scores (all crops, global and local).
    assignments: view index -> (n_local, K) codes from `sinkhorn` for the views that are
      assigned (the global crops).
    temperature: softmax temperature of the predictions.
    axis_name: data axis, or None.

  Returns:
    Mean over assigned views i, other views v != i and the global batch of
    -sum_k q_i log softmax(scores_v / T).
  """
  total = 0.0
  for i, q in assignments.items():
    others = [v for v in range(len(scores)) if v != i]
    for v in others:
      log_p = jax.nn.log_softmax(scores[v].astype(jnp.float32) / temperature, axis=-1)
      total = total + global_mean(-jnp.sum(q * log_p, axis=-1), axis_name) / len(others)
  return total / len(assignments)


def dino(student: list[jax.Array], teacher: list[jax.Array], center: jax.Array, *, student_temperature: float,
         teacher_temperature: jax.Array | float, axis_name: str | None = None) -> jax.Array:
  """DINO's cross-entropy between the centred, sharpened teacher and the student (Caron et al. 2021).

  Args:
    student: per view (global crops first, then local), (n_local, K) student outputs.
    teacher: per global view, (n_local, K) teacher outputs (gradient stopped by the caller).
    center: (K,) running mean of the teacher outputs.
    student_temperature, teacher_temperature: softmax temperatures.
    axis_name: data axis, or None.

  Returns:
    Mean over the pairs (teacher view t, student view s != t) and the global batch of
    -sum softmax((teacher_t - center) / T_t) * log_softmax(student_s / T_s).
  """
  targets = [jax.nn.softmax((t.astype(jnp.float32) - center) / teacher_temperature, axis=-1) for t in teacher]
  log_probs = [jax.nn.log_softmax(s.astype(jnp.float32) / student_temperature, axis=-1) for s in student]
  total, pairs = 0.0, 0
  for t, target in enumerate(targets):
    for s, log_p in enumerate(log_probs):
      if s == t:
        continue
      total = total + global_mean(-jnp.sum(target * log_p, axis=-1), axis_name)
      pairs += 1
  return total / pairs


# ----------------------------------------------------------------------------- image-text


def clip_loss(image_emb: jax.Array, text_emb: jax.Array, *, logit_scale: jax.Array, max_scale: float = 100.0,
              axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CLIP's symmetric InfoNCE (Radford et al. 2021) over the global batch of image-text pairs.

  Image and text embeddings are L2-normalised and all-gathered (gradients flow back through
  the gathers), so every image is contrasted with every text of the global batch and vice
  versa; pair i's positive is text i. The logit scale is exp(logit_scale) clipped at
  `max_scale` (100 in the paper), i.e. a temperature of at least 0.01.

  Args:
    image_emb, text_emb: (n_local, d) projections of this device's pairs (unnormalised).
    logit_scale: scalar log of the inverse temperature (learned; CLIP initialises log(1/0.07)).
    max_scale: the clip on exp(logit_scale).
    axis_name: data axis, or None on one device.

  Returns:
    (mean of the image->text and text->image cross-entropies over the global batch,
     {'image_to_text_top1', 'text_to_image_top1', 'logit_scale'}).
  """
  img = l2_normalize(image_emb.astype(jnp.float32))
  txt = l2_normalize(text_emb.astype(jnp.float32))
  scale = jnp.minimum(jnp.exp(logit_scale.astype(jnp.float32)), max_scale)
  n = img.shape[0]
  labels = device_offset(n, axis_name) + jnp.arange(n)
  metrics = {"logit_scale": scale}
  total = 0.0
  for name, q, keys in (("image_to_text", img, all_gather(txt, axis_name)),
                        ("text_to_image", txt, all_gather(img, axis_name))):
    logits = scale * (q @ keys.T)  # (n_local, N)
    row_loss = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=1)[:, 0]
    total = total + global_mean(row_loss, axis_name)
    metrics[f"{name}_top1"] = global_mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32), axis_name)
  return total / 2.0, metrics


def _sigmoid_pair_loss(img: jax.Array, txt: jax.Array, scale: jax.Array, bias: jax.Array,
                       positives: bool) -> jax.Array:
  """Sum of -log sigmoid(label * (scale * img . txt + bias)) over an (n, m) block of pairs;
  labels are +1 on the block's diagonal when `positives`, else all -1."""
  logits = scale * (img @ txt.T) + bias
  labels = 2.0 * jnp.eye(*logits.shape, dtype=logits.dtype) - 1.0 if positives else -jnp.ones_like(logits)
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits))


def siglip_loss(image_emb: jax.Array, text_emb: jax.Array, *, logit_scale: jax.Array, logit_bias: jax.Array,
                axis_name: str | None = None, chunked: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
  """SigLIP's pairwise sigmoid loss (Zhai et al. 2023) over the global batch.

  Every (image, text) pair of the global batch is a binary problem: label +1 for the true
  pair, -1 otherwise; the loss is the sum over all N^2 pairs of -log sigmoid(label * (t x.y + b))
  divided by N. With `chunked` (the paper's efficient implementation) no device ever holds
  more than its n x n block of logits: it scores its images against its own texts, then
  passes the texts one device along the ring (`ppermute`) and scores the next block, D - 1
  times. Without it, the texts are all-gathered and the n x N logits formed at once; both
  give the same loss and gradients.

  Args:
    image_emb, text_emb: (n_local, d) projections (unnormalised).
    logit_scale: scalar log of t (SigLIP initialises t = 10, i.e. log 10).
    logit_bias: scalar b (initialised at -10).
    axis_name: data axis, or None on one device.
    chunked: pass text chunks around the ring instead of all-gathering them.

  Returns:
    (loss, {'logit_scale', 'logit_bias'}).
  """
  img = l2_normalize(image_emb.astype(jnp.float32))
  txt = l2_normalize(text_emb.astype(jnp.float32))
  scale, bias = jnp.exp(logit_scale.astype(jnp.float32)), logit_bias.astype(jnp.float32)
  n = img.shape[0]
  n_global = global_count(n, axis_name)
  metrics = {"logit_scale": scale, "logit_bias": bias}
  if axis_name is None:
    return _sigmoid_pair_loss(img, txt, scale, bias, True) / n_global, metrics
  devices = jax.lax.axis_size(axis_name)
  if not chunked:
    logits = scale * (img @ all_gather(txt, axis_name).T) + bias  # (n, N)
    labels = 2.0 * (jnp.arange(logits.shape[1])[None, :] == (device_offset(n, axis_name) + jnp.arange(n))[:, None]) - 1.0
    return global_sum(-jnp.sum(jax.nn.log_sigmoid(labels * logits)), axis_name) / n_global, metrics
  total = _sigmoid_pair_loss(img, txt, scale, bias, True)
  ring = [(d, (d + 1) % devices) for d in range(devices)]
  for _ in range(devices - 1):
    txt = jax.lax.ppermute(txt, axis_name, ring)  # The texts of the previous device on the ring.
    total = total + _sigmoid_pair_loss(img, txt, scale, bias, False)
  return global_sum(total, axis_name) / n_global, metrics
