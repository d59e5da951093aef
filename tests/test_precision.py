"""Mixed precision: `model.dtype=bfloat16` runs the backbone's convolutions in bfloat16 while
parameters, optimizer state, BatchNorm statistics, heads, losses and softmax stay float32."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from reference import load_config, random_batch

from sslax import parallel
from sslax.step import build_setup, create_train_state, make_train_step

# One tiny-preset SimCLR step from the same initial weights: bf16 activations (8 mantissa bits)
# move the loss by well under 1% and keep the direction of the parameter update (measured:
# loss 3e-4 apart relative, update cosine 0.992); the same network in float32 gives 0 and 1.
LOSS_RTOL = 0.01
MIN_UPDATE_COSINE = 0.97


@functools.lru_cache(maxsize=None)
def _setup(dtype):
  config, _ = load_config("simclr", **{"model.dtype": dtype, "warmup_steps": 0})
  return build_setup(config, 32, mesh=parallel.make_mesh(jax.devices()[:1]), num_classes=10)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def test_bfloat16_step_stays_close_to_the_float32_step_and_keeps_float32_state():
  results = {}
  for dtype in ("float32", "bfloat16"):
    setup = _setup(dtype)
    state = create_train_state(setup, jax.random.PRNGKey(0))
    initial = jax.device_get(state.params)
    batch = parallel.to_global_batch(random_batch(seed=0), setup.mesh)
    step = make_train_step(setup)
    hlo = step.lower(state, batch).as_text()
    state, metrics = step(state, batch)
    results[dtype] = (hlo, float(metrics["loss"]), _flat(jax.device_get(state.params)) - _flat(initial))
    # Everything the run keeps is float32, whatever the compute dtype.
    kept = (state.params, state.opt_state, state.batch_stats, state.probe, metrics["loss"])
    assert {leaf.dtype for leaf in jax.tree.leaves(kept) if jnp.issubdtype(leaf.dtype, jnp.floating)} \
        == {jnp.dtype("float32")}, dtype
  (hlo32, loss32, update32), (hlo16, loss16, update16) = results["float32"], results["bfloat16"]
  assert "bf16" not in hlo32 and "bf16" in hlo16  # The bf16 step really computes in bf16.
  assert abs(loss16 - loss32) <= LOSS_RTOL * abs(loss32), (loss16, loss32)
  cosine = update16 @ update32 / (np.linalg.norm(update16) * np.linalg.norm(update32))
  assert cosine >= MIN_UPDATE_COSINE, cosine


def test_bfloat16_loss_stays_finite_for_50_steps():
  setup = _setup("bfloat16")
  state = create_train_state(setup, jax.random.PRNGKey(1))
  step = make_train_step(setup)
  losses = []
  for s in range(50):
    state, metrics = step(state, parallel.to_global_batch(random_batch(seed=s), setup.mesh))
    losses.append(metrics["loss"])
  losses = np.asarray(jax.device_get(losses))
  assert np.all(np.isfinite(losses)), losses
  assert np.all(np.isfinite(_flat(jax.device_get(state.params))))
