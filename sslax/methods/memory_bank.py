"""A memory bank of every training example's embedding, with NCE over sampled negatives:
what InstDisc/NPID (Wu et al. 2018) and PIRL (Misra & van der Maaten 2020) share."""
from __future__ import annotations

import math
import zlib

import jax
import jax.numpy as jnp

from sslax import losses, parallel
from sslax.config_utils import ConfigError, Field
from sslax.methods.base import Method

MEMORY_BANK_FIELDS = {
    "temperature": Field(0.07, "temperature of the cosine scores", gt=0),
    "num_negatives": Field(4096, "negatives m drawn from the memory bank each step", ge=1, integer=True),
    "bank_momentum": Field(0.5, "memory update: m_i <- normalise(momentum * m_i + (1 - momentum) * v_i)", ge=0,
                           lt=1),
}


class MemoryBankMethod(Method):
  """Embeddings scored against a memory bank (num_examples, d) with NCE.

  The bank lives in method_state['bank'], L2-normalised rows indexed by dataset position
  and initialised with random unit vectors. It is **replicated** on every device: each step
  reads m random rows for the negatives and the batch's own rows for the positives, both
  anywhere in the bank, so a sharded bank would need an all-gather of those rows every step;
  replicated, the reads are local and the write is one gather of the global batch's new
  rows (`gather_for_state`). At ImageNet scale that is 1.28M x 128 float32 = 655 MB per
  device, small next to an accelerator's memory. Every device writes the same rows at the
  same global indices, so the bank is the single-device bank whatever the device count,
  and it is saved and restored with the TrainState.

  Negatives: `num_negatives` indices drawn uniformly (with replacement) from (seed, step),
  identical on every device and shared by the rows of the step's batch. The papers draw
  them per example; sharing them keeps the read at m x d instead of n x m x d (0.5 GB at
  n = 256, m = 4096) and leaves each row's loss an unbiased sample of the same expectation.

  NCE (Gutmann & Hyvarinen 2010, as InstDisc): P(i | v) = exp(v . m_i / T) / Z against m
  noise samples from the uniform P_n = 1/N, so h = P(i|v) / (P(i|v) + m / N); Z is estimated
  once, on the first step's batch, as N times the mean of exp(v . m_j / T) over the batch's
  positives and negatives (Wu et al.'s implementation), and then kept in method_state.
  """

  needs_index = True
  num_views = 1

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    if self.num_examples < 2:
      raise ConfigError(f"{self.name} keeps a memory bank row per training example and needs the training set size "
                        f"(got {self.num_examples}).")
    c = self.settings
    self.temperature = float(c.temperature)
    self.num_negatives = int(c.num_negatives)
    self.bank_momentum = float(c.bank_momentum)

  def init_state(self, params, rng) -> dict:
    del params
    dim = self.config.model.projector.output_dim
    bank = losses.l2_normalize(jax.random.normal(rng, (self.num_examples, dim), jnp.float32))
    return {"bank": bank, "log_normalizer": jnp.zeros((), jnp.float32), "normalizer_ready": jnp.zeros((), bool)}

  def negative_indices(self, step: jax.Array) -> jax.Array:
    """(m,) bank rows drawn uniformly from (seed, step), the same on every device."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.config.seed), zlib.crc32(b"bank")), step)
    return jax.random.randint(key, (self.num_negatives,), 0, self.num_examples)

  def nce(self, v: jax.Array, index: jax.Array, method_state: dict, negatives: jax.Array, axis_name,
          log_normalizer: jax.Array | None = None):
    """NCE of each embedding against its own bank row (positive) and the shared negatives.

    Args:
      v: (n_local, d) L2-normalised embeddings.
      index: (n_local,) their dataset indices.
      method_state: with 'bank', 'log_normalizer', 'normalizer_ready'.
      negatives: (m,) negative bank rows.
      axis_name: data axis, or None.
      log_normalizer: a log Z to use as is (PIRL's second term shares the first term's);
        None: the stored one, or, before the first update, this batch's estimate.

    Returns:
      (global-batch mean loss, log Z used, {'bank_top1': fraction of rows whose own bank row
      scores above every negative}).
    """
    bank = method_state["bank"]
    positive = jnp.sum(v * bank[index], axis=-1) / self.temperature
    negative = v @ bank[negatives].T / self.temperature  # (n, m)
    if log_normalizer is None:
      # Z = N * mean exp(score) over the batch's positives and negatives, a global log-mean-exp.
      scores = jax.lax.stop_gradient(jnp.concatenate([positive[:, None], negative], axis=1))
      top = jnp.max(scores) if axis_name is None else jax.lax.pmax(jnp.max(scores), axis_name)
      total = parallel.global_sum(jnp.sum(jnp.exp(scores - top)), axis_name)
      count = parallel.global_count(scores.size, axis_name)
      estimate = math.log(self.num_examples) + top + jnp.log(total) - jnp.log(count)
      log_z = jnp.where(method_state["normalizer_ready"], method_state["log_normalizer"], estimate)
    else:
      log_z = log_normalizer
    row_loss = losses.nce_binary_loss(positive, negative, log_normalizer=log_z,
                                      log_noise_mass=math.log(self.num_negatives / self.num_examples))
    top1 = (positive > jnp.max(negative, axis=1)).astype(jnp.float32)
    return parallel.global_mean(row_loss, axis_name), log_z, {"bank_top1": parallel.global_mean(top1, axis_name)}

  def update_bank(self, method_state: dict, v: jax.Array, index: jax.Array, log_z: jax.Array, axis_name) -> dict:
    """The bank after writing the global batch's embeddings `v` (gradient stopped) at their indices.

    Every example of the global batch is written exactly once, by every device alike.
    """
    v = parallel.gather_for_state(jax.lax.stop_gradient(v.astype(jnp.float32)), axis_name)
    index = parallel.gather_for_state(index.astype(jnp.int32), axis_name)
    bank = method_state["bank"]
    rows = losses.l2_normalize(self.bank_momentum * bank[index] + (1.0 - self.bank_momentum) * v)
    return dict(method_state, bank=bank.at[index].set(rows), log_normalizer=log_z,
                normalizer_ready=jnp.ones((), bool))
