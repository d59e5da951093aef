"""MoCo, BYOL/SimSiam, SwAV and DINO losses and the collapse monitors against NumPy references,
and their multi-device semantics (8 devices of a few rows == 1 device of all rows)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from reference import numerical_grad
from sslax import losses, monitors, parallel


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def numpy_info_nce_queue(q, k, queue, t):
  q, k = _unit(q), _unit(k)
  total = 0.0
  for i in range(len(q)):
    logits = np.concatenate([[q[i] @ k[i]], queue @ q[i]]) / t
    total += -(logits[0] - np.log(np.exp(logits).sum()))
  return total / len(q)


def numpy_info_nce_gathered(q, k, t):
  q, k = _unit(q), _unit(k)
  logits = q @ k.T / t
  return 2 * t * np.mean([-(logits[i, i] - np.log(np.exp(logits[i]).sum())) for i in range(len(q))])


def numpy_negative_cosine(p, z):
  return -np.mean(np.sum(_unit(p) * _unit(z), axis=-1))


def numpy_sinkhorn(scores, eps, iters):
  """SwAV's distributed_sinkhorn on one process, transcribed from the paper's pseudo-code."""
  q = np.exp(scores / eps).T
  k, b = q.shape
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def numpy_swav(scores, codes, t):
  total = 0.0
  for i, q in codes.items():
    sub = 0.0
    for v in range(len(scores)):
      if v != i:
        sub += np.mean(-np.sum(q * _log_softmax(scores[v] / t), axis=-1))
    total += sub / (len(scores) - 1)
  return total / len(codes)


def numpy_dino(student, teacher, center, ts, tt):
  total, pairs = 0.0, 0
  for a, t in enumerate(teacher):
    target = np.exp(_log_softmax((t - center) / tt))
    for b, s in enumerate(student):
      if a != b:
        total += np.mean(-np.sum(target * _log_softmax(s / ts), axis=-1))
        pairs += 1
  return total / pairs


def numpy_effective_rank(z):
  s = np.linalg.svd(z, compute_uv=False)
  p = s / s.sum() + 1e-7
  return np.exp(-np.sum(p * np.log(p)))


def _f32(*xs):
  return [jnp.asarray(x, jnp.float32) for x in xs]


def test_info_nce_with_queue_value_and_gradient():
  rng = np.random.default_rng(0)
  q, k = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  queue = _unit(rng.normal(size=(7, 4)))
  ours = lambda a: losses.info_nce_with_queue(a, jnp.asarray(k, jnp.float32), jnp.asarray(queue, jnp.float32),
                                              temperature=0.2)[0]
  np.testing.assert_allclose(float(ours(jnp.asarray(q, jnp.float32))), numpy_info_nce_queue(q, k, queue, 0.2), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.grad(ours)(jnp.asarray(q, jnp.float32))),
                             numerical_grad(lambda a: numpy_info_nce_queue(a, k, queue, 0.2), q), atol=1e-4, rtol=1e-3)


def test_info_nce_gathered_value_and_gradient():
  rng = np.random.default_rng(1)
  q, k = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  ours = lambda a, b: losses.info_nce_gathered(a, b, temperature=0.2)[0]
  np.testing.assert_allclose(float(ours(*_f32(q, k))), numpy_info_nce_gathered(q, k, 0.2), rtol=1e-5)
  gq, gk = jax.grad(ours, (0, 1))(*_f32(q, k))
  np.testing.assert_allclose(np.asarray(gq), numerical_grad(lambda a: numpy_info_nce_gathered(a, k, 0.2), q),
                             atol=1e-5, rtol=1e-3)
  np.testing.assert_allclose(np.asarray(gk), numerical_grad(lambda b: numpy_info_nce_gathered(q, b, 0.2), k),
                             atol=1e-5, rtol=1e-3)


def test_negative_cosine_value_and_gradient():
  rng = np.random.default_rng(2)
  p, z = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  ours = lambda a: losses.negative_cosine(a, jnp.asarray(z, jnp.float32))
  np.testing.assert_allclose(float(ours(jnp.asarray(p, jnp.float32))), numpy_negative_cosine(p, z), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.grad(ours)(jnp.asarray(p, jnp.float32))),
                             numerical_grad(lambda a: numpy_negative_cosine(a, z), p), atol=1e-5, rtol=1e-3)


def test_sinkhorn_matches_swav_reference_and_equipartitions():
  rng = np.random.default_rng(3)
  scores = np.clip(rng.normal(scale=0.4, size=(12, 5)), -1, 1)
  ours = np.asarray(losses.sinkhorn(jnp.asarray(scores, jnp.float32), epsilon=0.05, iterations=3))
  np.testing.assert_allclose(ours, numpy_sinkhorn(scores, 0.05, 3), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=1e-5)  # Each sample's code is a distribution.
  many = np.asarray(losses.sinkhorn(jnp.asarray(scores, jnp.float32), epsilon=0.05, iterations=500))
  np.testing.assert_allclose(many.sum(axis=0), 12 / 5, rtol=1e-3)  # Prototypes share the samples equally.


def test_sinkhorn_mask_equals_dropping_the_masked_rows():
  rng = np.random.default_rng(4)
  scores = np.clip(rng.normal(scale=0.4, size=(10, 4)), -1, 1).astype(np.float32)
  weights = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], np.float32)
  masked = np.asarray(losses.sinkhorn(scores, epsilon=0.05, iterations=3, weights=jnp.asarray(weights)))
  np.testing.assert_allclose(masked[3:], numpy_sinkhorn(scores[3:].astype(np.float64), 0.05, 3), rtol=1e-4, atol=1e-7)
  assert np.all(masked[:3] == 0)


def test_swapped_prediction_value_and_gradient():
  rng = np.random.default_rng(5)
  scores = [np.clip(rng.normal(scale=0.5, size=(4, 6)), -1, 1) for _ in range(4)]  # 2 global + 2 local.
  codes = {i: numpy_sinkhorn(scores[i], 0.05, 3) for i in (0, 1)}
  jcodes = {i: jnp.asarray(c, jnp.float32) for i, c in codes.items()}
  ours = lambda s2: losses.swapped_prediction([*_f32(*scores[:2]), s2, jnp.asarray(scores[3], jnp.float32)], jcodes,
                                              temperature=0.1)
  np.testing.assert_allclose(float(ours(jnp.asarray(scores[2], jnp.float32))), numpy_swav(scores, codes, 0.1), rtol=1e-5)
  ref = lambda s2: numpy_swav([scores[0], scores[1], s2, scores[3]], codes, 0.1)
  np.testing.assert_allclose(np.asarray(jax.grad(ours)(jnp.asarray(scores[2], jnp.float32))),
                             numerical_grad(ref, scores[2]), atol=1e-5, rtol=1e-3)


def test_dino_value_and_gradient():
  rng = np.random.default_rng(6)
  student = [rng.normal(size=(3, 5)) for _ in range(4)]
  teacher = [rng.normal(size=(3, 5)) for _ in range(2)]
  center = rng.normal(scale=0.1, size=5)
  ours = lambda s0: losses.dino([s0, *_f32(*student[1:])], _f32(*teacher), jnp.asarray(center, jnp.float32),
                                student_temperature=0.1, teacher_temperature=0.04)
  np.testing.assert_allclose(float(ours(jnp.asarray(student[0], jnp.float32))),
                             numpy_dino(student, teacher, center, 0.1, 0.04), rtol=1e-5)
  ref = lambda s0: numpy_dino([s0, *student[1:]], teacher, center, 0.1, 0.04)
  np.testing.assert_allclose(np.asarray(jax.grad(ours)(jnp.asarray(student[0], jnp.float32))),
                             numerical_grad(ref, student[0]), atol=1e-4, rtol=1e-3)


def test_effective_rank():
  rng = np.random.default_rng(7)
  z = rng.normal(size=(32, 6)) * np.array([3, 2, 1, 0.5, 0.1, 0.01])
  np.testing.assert_allclose(float(monitors.effective_rank(jnp.asarray(z, jnp.float32))), numpy_effective_rank(z),
                             rtol=1e-4)
  collapsed = np.outer(rng.normal(size=32), rng.normal(size=6))
  assert float(monitors.effective_rank(jnp.asarray(collapsed, jnp.float32))) < 1.01


def _sharded(fn, n_in):
  mesh = parallel.make_mesh(jax.devices()[:8])
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(parallel.DATA_AXIS),) * n_in, out_specs=P()))


def test_global_batch_semantics_on_eight_devices():
  """Each loss on 8 devices x 2 rows equals the loss on 1 device x 16 rows (values and
  gradients); the per-device versions (the bugs this guards against) would differ."""
  rng = np.random.default_rng(8)
  a, b = rng.normal(size=(16, 4)).astype(np.float32), rng.normal(size=(16, 4)).astype(np.float32)
  axis = parallel.DATA_AXIS

  fn = lambda x, y, axis_name=None: losses.info_nce_gathered(x, y, temperature=0.2, axis_name=axis_name)[0]
  np.testing.assert_allclose(float(_sharded(lambda x, y: fn(x, y, axis), 2)(a, b)), float(fn(a, b)), rtol=1e-5)
  g8 = jax.jit(jax.grad(_sharded(lambda x, y: fn(x, y, axis), 2), (0, 1)))(a, b)
  for x, y in zip(g8, jax.grad(fn, (0, 1))(a, b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
  local = np.mean([float(fn(a[i:i + 2], b[i:i + 2])) for i in range(0, 16, 2)])
  assert abs(local - float(fn(a, b))) > 1e-2  # Local keys only would be another loss.

  scores = np.clip(a @ b[:5].T / 4, -1, 1)
  sk8 = _sharded(lambda s: parallel.gather_for_state(losses.sinkhorn(s, epsilon=0.05, iterations=3, axis_name=axis),
                                                   axis), 1)(scores)
  np.testing.assert_allclose(np.asarray(sk8), numpy_sinkhorn(scores.astype(np.float64), 0.05, 3), rtol=1e-4, atol=1e-7)

  center = rng.normal(size=4).astype(np.float32)
  dino = lambda s, t, axis_name=None: losses.dino([s, t], [t, s], center, student_temperature=0.1,
                                                  teacher_temperature=0.05, axis_name=axis_name)
  np.testing.assert_allclose(float(_sharded(lambda s, t: dino(s, t, axis), 2)(a, b)), float(dino(a, b)), rtol=1e-5)
  rank8 = _sharded(lambda z: monitors.effective_rank(z, axis), 1)(a)
  np.testing.assert_allclose(float(rank8), numpy_effective_rank(a.astype(np.float64)), rtol=1e-4)
