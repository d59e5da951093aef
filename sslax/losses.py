"""Self-supervised losses with explicit cross-device collectives.

Functions here run inside `jax.shard_map` over the mesh's data axis: each device
holds its local rows, and `axis_name` names the axis to gather negatives over (the
collectives live in sslax.parallel). With `axis_name=None` they run on a single device and
the local batch is the global one.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sslax.parallel import all_gather, device_offset, global_count, global_mean, global_sum


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis`, with a finite (zero) gradient at x = 0.

  sqrt's derivative at 0 is infinite, and the floor multiplied it by zero, which made the
  gradient of an all-zero vector NaN (seen as a NaN SimSiam step when a tiny predictor's
  output was exactly zero); so sqrt only ever sees positive squared norms. The values are
  those of x / max(sqrt(sum x^2), eps) bit for bit (written as sqrt(max(...)) instead, XLA
  turns the division into a multiplication by rsqrt, whose rounding then depends on the
  device count).
  """
  squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  positive = squared > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
  return x / jnp.maximum(norm, eps)


class TwoViewPairs(NamedTuple):
  """This device's embeddings of a two-view batch against the whole global batch's.

  Every example of the global batch (N of them) has two embeddings, one per view; an
  embedding's positive is the other view of its example and every embedding of another
  example is a negative. Rows are this device's 2n embeddings [view 1; view 2], columns the
  2N gathered ones in global order [view 1 of all devices; view 2 of all devices]; gradients
  flow back through the gather (sslax.parallel.all_gather), so a loss summed over the rows of
  every device has the single-device gradient.

  Attributes:
    rows: (2n, d) this device's embeddings.
    cols: (2N, d) every device's embeddings.
    row_example, col_example: (2n,), (2N,) global example index of each embedding.
    is_self: (2n, 2N) True where a column is the row's own embedding.
    positive: (2n,) column of each row's positive (the other view of its example).
  """

  rows: jax.Array
  cols: jax.Array
  row_example: jax.Array
  col_example: jax.Array
  is_self: jax.Array
  positive: jax.Array

  @property
  def is_negative(self) -> jax.Array:
    """(2n, 2N) True where the column is an embedding of another example."""
    return self.row_example[:, None] != self.col_example[None, :]

  def squared_distances(self) -> jax.Array:
    """(2n, 2N) squared Euclidean distances, clipped at 0 against rounding."""
    sq_rows = jnp.sum(jnp.square(self.rows), axis=1)
    sq_cols = jnp.sum(jnp.square(self.cols), axis=1)
    dots = jnp.einsum("id,jd->ij", self.rows, self.cols, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(sq_rows[:, None] + sq_cols[None, :] - 2.0 * dots, 0.0)

  def distances(self) -> jax.Array:
    """(2n, 2N) Euclidean distances; the floor keeps sqrt's gradient finite at a zero distance."""
    return jnp.sqrt(jnp.maximum(self.squared_distances(), 1e-12))


def two_view_pairs(z1: jax.Array, z2: jax.Array, axis_name: str | None, *, normalize: bool = True) -> TwoViewPairs:
  """The pair layout of a two-view batch (see TwoViewPairs), in float32.

  Args:
    z1, z2: (n_local, d) embeddings of the two views of this device's examples.
    axis_name: the batch's mesh axis, or None on one device.
    normalize: L2-normalise the embeddings first.

  Returns:
    TwoViewPairs.
  """
  n_local = z1.shape[0]
  rows = jnp.concatenate([z1, z2], axis=0).astype(jnp.float32)
  if normalize:
    rows = l2_normalize(rows)
  cols = jnp.concatenate([all_gather(rows[:n_local], axis_name), all_gather(rows[n_local:], axis_name)])
  n_global = cols.shape[0] // 2
  local = device_offset(n_local, axis_name) + jnp.arange(n_local)
  row_example = jnp.concatenate([local, local])
  col_example = jnp.concatenate([jnp.arange(n_global), jnp.arange(n_global)])
  self_col = jnp.concatenate([local, local + n_global])
  is_self = jnp.arange(2 * n_global)[None, :] == self_col[:, None]
  return TwoViewPairs(rows, cols, row_example, col_example, is_self, jnp.concatenate([local + n_global, local]))


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
  pairs = two_view_pairs(z1, z2, axis_name)
  logits = (pairs.rows @ pairs.cols.T) / temperature  # (2n, 2N)
  # A large finite value rather than -inf keeps every intermediate of the backward pass finite.
  logits = jnp.where(pairs.is_self, -1e9, logits)
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  row_loss = -jnp.take_along_axis(log_prob, pairs.positive[:, None], axis=1)[:, 0]
  correct = (jnp.argmax(logits, axis=-1) == pairs.positive).astype(jnp.float32)
  n_global = pairs.cols.shape[0] // 2
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


# ----------------------------------------------------------------------------- metric learning
#
# The losses contrastive learning grew out of, on two views of each image (the positive of an
# embedding is the other view of its example, the negatives every embedding of another
# example in the global batch; sslax.methods.metric). Each device scores its 2n rows against
# the 2N gathered columns (two_view_pairs) and the row terms are summed over devices, so every
# loss is the single-device loss of the global batch, gradients included.


def _global_masked_mean(values: jax.Array, mask: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean of `values` where `mask` over the global batch (0 when the mask is empty)."""
  mask = mask.astype(jnp.float32)
  total = global_sum(jnp.sum(jnp.where(mask > 0, values, 0.0)), axis_name)
  return total / jnp.maximum(global_sum(jnp.sum(mask), axis_name), 1.0)


def contrastive_margin_loss(z1: jax.Array, z2: jax.Array, *, margin: float, normalize: bool = True,
                            axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The contrastive loss with a margin (Hadsell, Chopra & LeCun 2006, eq. 4).

  A positive pair at distance D costs D^2 / 2, a negative pair max(0, m - D)^2 / 2. Each of the
  two terms is averaged over its own pairs (a batch holds 2N - 2 negatives per positive, so a
  plain mean over all pairs would be almost only the negative term).

  Args:
    z1, z2: (n_local, d) embeddings of the two views.
    margin: m, the distance beyond which a negative pair costs nothing.
    normalize: L2-normalise the embeddings (distances then lie in [0, 2]).
    axis_name: data axis, or None on one device.

  Returns:
    (mean positive term + mean negative term, {'positive_distance', 'active_negatives'}).
  """
  pairs = two_view_pairs(z1, z2, axis_name, normalize=normalize)
  distance = pairs.distances()
  positive = jnp.take_along_axis(distance, pairs.positive[:, None], axis=1)[:, 0]
  negative_term = 0.5 * jnp.square(jax.nn.relu(margin - distance))
  loss = global_mean(0.5 * jnp.square(positive), axis_name) + _global_masked_mean(
      negative_term, pairs.is_negative, axis_name)
  active = _global_masked_mean((distance < margin).astype(jnp.float32), pairs.is_negative, axis_name)
  return loss, {"positive_distance": global_mean(positive, axis_name), "active_negatives": active}


TRIPLET_MINING = ("batch_all", "batch_hard", "semi_hard")


def triplet_loss(z1: jax.Array, z2: jax.Array, *, margin: float, mining: str = "semi_hard", normalize: bool = True,
                 axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The triplet loss max(0, D_ap^2 - D_an^2 + alpha) of FaceNet (Schroff et al. 2015), squared
  Euclidean distances on L2-normalised embeddings as in the paper.

  Every embedding is an anchor, its other view the positive. The negatives by `mining`:
  - 'batch_all': every (anchor, negative) triplet; the mean over the triplets with a non-zero
    loss (Hermans et al. 2017's "batch all", the mean that does not fade as triplets get easy);
  - 'batch_hard': the closest negative of each anchor (Hermans et al. 2017), mean over anchors;
  - 'semi_hard': FaceNet's choice, the closest negative that is farther than the positive
    (D_an^2 > D_ap^2); an anchor without one takes its farthest negative (as TF-Addons'
    triplet_semihard_loss); mean over anchors.

  Args:
    z1, z2: (n_local, d) embeddings of the two views.
    margin: alpha.
    mining: one of TRIPLET_MINING.
    normalize: L2-normalise the embeddings first.
    axis_name: data axis, or None on one device.

  Returns:
    (loss, {'active_triplets': the fraction of the mined triplets with a non-zero loss}).
  """
  if mining not in TRIPLET_MINING:
    raise ValueError(f"Unknown triplet mining {mining!r}; valid choices: {', '.join(TRIPLET_MINING)}.")
  pairs = two_view_pairs(z1, z2, axis_name, normalize=normalize)
  d2 = pairs.squared_distances()
  negative = pairs.is_negative
  d_ap = jnp.take_along_axis(d2, pairs.positive[:, None], axis=1)  # (2n, 1)
  if mining == "batch_all":
    terms = jax.nn.relu(d_ap - d2 + margin)
    active = negative & (terms > 0)
    loss = _global_masked_mean(terms, active, axis_name)
    return loss, {"active_triplets": _global_masked_mean(active.astype(jnp.float32), negative, axis_name)}
  big = jnp.float32(1e9)
  closest = jnp.min(jnp.where(negative, d2, big), axis=1)
  if mining == "semi_hard":
    farther = negative & (d2 > d_ap)
    farthest = jnp.max(jnp.where(negative, d2, -big), axis=1)
    closest = jnp.where(jnp.any(farther, axis=1), jnp.min(jnp.where(farther, d2, big), axis=1), farthest)
  terms = jax.nn.relu(d_ap[:, 0] - closest + margin)
  return global_mean(terms, axis_name), {"active_triplets": global_mean((terms > 0).astype(jnp.float32), axis_name)}


def n_pair_loss(z1: jax.Array, z2: jax.Array, *, l2_reg: float = 0.002,
                axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The multi-class N-pair loss (Sohn 2016, eq. 6) with its embedding-norm regulariser.

  Anchor f_i (view 1) against the positives f_j+ (view 2) of every example j of the global
  batch: log(1 + sum_{j != i} exp(f_i.f_j+ - f_i.f_i+)), which is the softmax cross-entropy of
  the inner products f_i.f_j+ with target i. Inner products of unnormalised embeddings, as in
  the paper, whose regulariser l2_reg * (|f_i|^2 + |f_i+|^2) (averaged over the N pairs) keeps
  their norms bounded.

  Args:
    z1, z2: (n_local, d) anchors (view 1) and positives (view 2).
    l2_reg: lambda of the norm regulariser (0.002 in the paper's code).
    axis_name: data axis, or None on one device.

  Returns:
    (loss, {'contrastive_top1', 'embedding_norm'}).
  """
  a, p = z1.astype(jnp.float32), z2.astype(jnp.float32)
  logits = jnp.einsum("id,jd->ij", a, all_gather(p, axis_name), precision=jax.lax.Precision.HIGHEST)
  labels = device_offset(a.shape[0], axis_name) + jnp.arange(a.shape[0])
  row_loss = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=1)[:, 0]
  norms = jnp.sum(jnp.square(a), axis=1) + jnp.sum(jnp.square(p), axis=1)
  loss = global_mean(row_loss, axis_name) + l2_reg * global_mean(norms, axis_name)
  top1 = global_mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32), axis_name)
  return loss, {"contrastive_top1": top1, "embedding_norm": global_mean(jnp.sqrt(norms / 2.0), axis_name)}


def lifted_structured_loss(z1: jax.Array, z2: jax.Array, *, margin: float = 1.0, normalize: bool = True,
                           axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The lifted structured embedding loss (Oh Song et al. 2016, eq. 4).

  For each positive pair (i, j), the two views of one example:
  J_ij = log(sum_{k in neg(i)} exp(m - D_ik) + sum_{l in neg(j)} exp(m - D_jl)) + D_ij, and the
  loss is sum_{(i, j)} max(0, J_ij)^2 / (2 |P|) with Euclidean distances D over the N positive
  pairs of the global batch.

  Args:
    z1, z2: (n_local, d) embeddings of the two views.
    margin: m (alpha in the paper).
    normalize: L2-normalise the embeddings first.
    axis_name: data axis, or None on one device.

  Returns:
    (loss, {'positive_distance'}).
  """
  pairs = two_view_pairs(z1, z2, axis_name, normalize=normalize)
  n = z1.shape[0]
  distance = pairs.distances()
  neg_lse = jax.nn.logsumexp(jnp.where(pairs.is_negative, margin - distance, -jnp.inf), axis=1)  # (2n,)
  d_pos = jnp.take_along_axis(distance, pairs.positive[:, None], axis=1)[:n, 0]  # view-1 rows: one per pair.
  j = jnp.logaddexp(neg_lse[:n], neg_lse[n:]) + d_pos
  loss = global_mean(jnp.square(jax.nn.relu(j)), axis_name) / 2.0
  return loss, {"positive_distance": global_mean(d_pos, axis_name)}


def nce_binary_loss(positive_logits: jax.Array, negative_logits: jax.Array, *, log_normalizer: jax.Array | float,
                    log_noise_mass: jax.Array | float) -> jax.Array:
  """Noise-contrastive estimation (Gutmann & Hyvarinen 2010) of each row's positive against k noise samples.

  With the model's unnormalised log-density s (a score) and normaliser Z, a candidate is data
  with probability h = exp(s - log Z) / (exp(s - log Z) + k P_n); the loss of a row is
  -log h(positive) - sum over its k noise samples of log(1 - h(noise)), i.e. logistic losses
  of the logits s - log Z - log(k P_n).

  Args:
    positive_logits: (n,) the positives' scores s.
    negative_logits: (n, k) scores of each row's noise samples (-inf: no sample).
    log_normalizer: log Z (a constant: NCE learns self-normalised scores; InstDisc estimates
      it once from the first batch).
    log_noise_mass: log(k P_n), e.g. log(m / N_data) for m samples of a uniform noise over N_data.

  Returns:
    (n,) per-row losses.
  """
  shift = log_normalizer + log_noise_mass
  positive = -jax.nn.log_sigmoid(positive_logits - shift)
  negative = -jnp.sum(jax.nn.log_sigmoid(-(negative_logits - shift)), axis=-1)
  return positive + negative


def nce_pair_loss(z1: jax.Array, z2: jax.Array, *, temperature: float,
                  axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """NCE (Gutmann & Hyvarinen 2010) on two views: the other view is data, the global batch's
  other embeddings are the noise samples.

  Scores are cosine similarities / temperature. The noise distribution is uniform over the
  2N - 1 other embeddings and the row's 2N - 2 negatives are its k noise samples, so
  log(k P_n) = log((2N - 2) / (2N - 1)). log Z is estimated from the batch as InstDisc does
  (Wu et al. 2018): Z = (2N - 1) times the mean exp(score) over every row and candidate,
  under stop_gradient, so the scores learn to be self-normalised.

  Args:
    z1, z2: (n_local, d) embeddings of the two views.
    temperature: the scores' temperature.
    axis_name: data axis, or None on one device.

  Returns:
    (global-batch mean of nce_binary_loss, {'contrastive_top1', 'log_normalizer'}).
  """
  pairs = two_view_pairs(z1, z2, axis_name)
  scores = pairs.rows @ pairs.cols.T / temperature
  candidates = ~pairs.is_self
  m = pairs.cols.shape[0] - 1  # 2N - 1 candidates per row.
  top = jax.lax.stop_gradient(jnp.max(scores))
  top = top if axis_name is None else jax.lax.pmax(top, axis_name)
  total = global_sum(jnp.sum(jnp.where(candidates, jnp.exp(jax.lax.stop_gradient(scores) - top), 0.0)), axis_name)
  # Z = m * (mean of exp(score) over every row and candidate) = (sum of them) / rows.
  log_z = top + jnp.log(total) - jnp.log(global_count(scores.shape[0], axis_name))
  positive = jnp.take_along_axis(scores, pairs.positive[:, None], axis=1)[:, 0]
  negative = jnp.where(pairs.is_negative, scores, -jnp.inf)
  row_loss = nce_binary_loss(positive, negative, log_normalizer=log_z, log_noise_mass=jnp.log((m - 1.0) / m))
  correct = (jnp.argmax(jnp.where(candidates, scores, -jnp.inf), axis=-1) == pairs.positive).astype(jnp.float32)
  return global_mean(row_loss, axis_name), {"contrastive_top1": global_mean(correct, axis_name), "log_normalizer": log_z}


def soft_nearest_neighbor_loss(z1: jax.Array, z2: jax.Array, *, temperature: float, normalize: bool = True,
                               axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The soft nearest-neighbour loss (Frosst, Papernot & Hinton 2019, eq. 1).

  -log(sum_{j != i, same example} exp(-D_ij^2 / T) / sum_{k != i} exp(-D_ik^2 / T)), mean over
  the 2N embeddings; with two views an embedding's only same-class neighbour is its other view.

  Args:
    z1, z2: (n_local, d) embeddings of the two views.
    temperature: T.
    normalize: L2-normalise the embeddings first.
    axis_name: data axis, or None on one device.

  Returns:
    (loss, {'contrastive_top1': the fraction of rows whose nearest neighbour is their other view}).
  """
  pairs = two_view_pairs(z1, z2, axis_name, normalize=normalize)
  logits = jnp.where(pairs.is_self, -jnp.inf, -pairs.squared_distances() / temperature)
  row_loss = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), pairs.positive[:, None], axis=1)[:, 0]
  correct = (jnp.argmax(logits, axis=-1) == pairs.positive).astype(jnp.float32)
  return global_mean(row_loss, axis_name), {"contrastive_top1": global_mean(correct, axis_name)}
