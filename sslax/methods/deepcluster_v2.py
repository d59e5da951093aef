"""DeepCluster v2 (Caron et al. 2020, SwAV paper appendix): k-means pseudo-labels on a memory of
projected features, prototype cross-entropy."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sslax import losses, parallel
from sslax.config_utils import Field
from sslax.methods.common import Method, multi_view_forward, projection_output


class DeepClusterV2(Method):
  """Cross-entropy of each view's scores against the k-means assignments of its example.

  method_state holds a memory (views, M, d) of the L2-normalised projections of every
  training example (row = dataset index), the k-means centroids (heads, K, d) used as frozen
  prototypes, and each example's assignment per head (-1: none yet). At the first step of
  every epoch the memory written during the previous epoch is clustered with spherical
  k-means (`deepcluster.kmeans_iterations` rounds); each device assigns its 1/n slice of
  the memory and the centroid sums are summed across devices (psum), so the clustering is
  the single-device one. Head h clusters the memory of view h mod 2, as in the paper's code.
  Before the first epoch `before_training` fills the memory with one forward pass over the
  data (`fill_memory`), as the paper's init_memory does.
  """

  name = "deepcluster_v2"
  needs_index = True
  config_fields = {
      "num_prototypes": Field((3000, 3000, 3000), "k-means clusters of each head", gt=0, integer=True),
      "temperature": Field(0.1, "softmax temperature of the prototype scores", gt=0),
      "kmeans_iterations": Field(10, "spherical k-means rounds at each epoch start", ge=0, integer=True),
  }

  def __init__(self, config, **schedule):
    super().__init__(config, **schedule)
    c = self.settings
    self.temperature = float(c.temperature)
    self.num_prototypes = tuple(int(k) for k in c.num_prototypes)
    self.kmeans_iterations = int(c.kmeans_iterations)
    self.memory_size = int(self.num_examples)
    if self.memory_size < max(self.num_prototypes):
      raise ValueError(f"DeepCluster v2 needs at least {max(self.num_prototypes)} training examples for "
                       f"config.deepcluster_v2.num_prototypes={self.num_prototypes}; got {self.memory_size}. "
                       f"Lower --config.deepcluster_v2.num_prototypes.")

  def init_state(self, params, rng):
    del params
    dim = self.config.model.projector.output_dim
    heads, k = len(self.num_prototypes), max(self.num_prototypes)
    memory = losses.l2_normalize(jax.random.normal(rng, (self.num_views, self.memory_size, dim), jnp.float32))
    return {"memory": memory, "centroids": jnp.zeros((heads, k, dim), jnp.float32),
            "assignments": jnp.full((heads, self.memory_size), -1, jnp.int32)}

  # --------------------------------------------------------------------------- k-means

  def cluster(self, method_state: dict, step: jax.Array, axis_name: str | None, n_devices: int) -> dict:
    """Spherical k-means of the memory for every head (replicated result, sharded work)."""
    memory = method_state["memory"]
    rows = -(-self.memory_size // n_devices)
    start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * rows
    padded = jnp.pad(memory, ((0, 0), (0, rows * n_devices - self.memory_size), (0, 0)))
    valid = (start + jnp.arange(rows)) < self.memory_size
    centroids, assignments = [], []
    kmax = max(self.num_prototypes)
    for h, k in enumerate(self.num_prototypes):
      local = jax.lax.dynamic_slice_in_dim(padded[h % self.num_views], start, rows)
      key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.config.seed), step), h)
      init = jax.random.choice(key, self.memory_size, (k,), replace=False)
      c = memory[h % self.num_views][init]
      for _ in range(self.kmeans_iterations):
        assign = jnp.argmax(local @ c.T, axis=1)
        one_hot = jax.nn.one_hot(assign, k, dtype=jnp.float32) * valid[:, None]
        sums = parallel.global_sum(one_hot.T @ local, axis_name)
        counts = parallel.global_sum(one_hot.sum(axis=0), axis_name)
        # Empty clusters keep their previous centroid (the paper's code does the same).
        c = losses.l2_normalize(jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts[:, None], 1.0), c))
      assign = jnp.where(valid, jnp.argmax(local @ c.T, axis=1), -1).astype(jnp.int32)
      assignments.append(parallel.gather_for_state(assign, axis_name)[:self.memory_size])
      centroids.append(jnp.pad(c, ((0, kmax - k), (0, 0))))
    return dict(method_state, centroids=jnp.stack(centroids), assignments=jnp.stack(assignments))

  # --------------------------------------------------------------------------- memory

  def _write_memory(self, method_state, projections, index, axis_name):
    index = parallel.gather_for_state(index.astype(jnp.int32), axis_name)
    memory = method_state["memory"]
    for v, z in enumerate(projections):
      z = parallel.gather_for_state(jax.lax.stop_gradient(losses.l2_normalize(z.astype(jnp.float32))), axis_name)
      memory = memory.at[v, index].set(z)
    return dict(method_state, memory=memory)

  def fill_memory(self, model, params, batch_stats, method_state, views, *, index, axis_name):
    """Writes the projections of `views` (no gradient, BN statistics not updated) at `index`."""
    outs, _ = multi_view_forward(model, params, batch_stats, views, predict=False)
    return self._write_memory(method_state, [o["projection"] for o in outs], index, axis_name)

  def before_training(self, state, forward_pass):
    """The first clustering needs a full memory: one forward pass over the data fills it."""
    return forward_pass(self.fill_memory)

  # --------------------------------------------------------------------------- loss

  def loss(self, model, params, batch_stats, method_state, views, *, step, axis_name, batch=None):
    n_devices = parallel.axis_size(axis_name)
    new_epoch = step % self.steps_per_epoch == 0
    method_state = jax.lax.cond(new_epoch, lambda s: self.cluster(s, step, axis_name, n_devices), lambda s: s,
                                method_state)
    # The clustering's collectives sit inside the conditional, which XLA-CPU does not order
    # with the forward pass's (BatchNorm) collectives; a data dependency makes every device
    # finish the clustering first, so no two devices wait at different collectives.
    # (Only `views` is taken from the barrier: the state keeps its replicated type.)
    views = jax.lax.optimization_barrier((views, method_state))[0]
    outs, new_stats = multi_view_forward(model, params, batch_stats, views)
    index = batch["index"]
    total, count = 0.0, 0.0
    for h, k in enumerate(self.num_prototypes):
      centroids = jax.lax.stop_gradient(method_state["centroids"][h, :k])
      targets = method_state["assignments"][h, index]
      valid = (targets >= 0).astype(jnp.float32)
      for o in outs:
        logits = losses.l2_normalize(o["projection"].astype(jnp.float32)) @ centroids.T / self.temperature
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.maximum(targets, 0)[:, None], axis=1)[:, 0]
        total = total + parallel.global_sum(jnp.sum(ce * valid), axis_name)
        count = count + parallel.global_sum(jnp.sum(valid), axis_name)
    loss = total / jnp.maximum(count, 1.0)
    new_state = self._write_memory(method_state, [o["projection"] for o in outs], index, axis_name)
    n_global = parallel.global_count(views[0].shape[0], axis_name)
    metrics = {"assigned_fraction": count / (len(self.num_prototypes) * len(outs) * n_global)}
    return projection_output(loss, outs, new_stats, new_state, metrics)
