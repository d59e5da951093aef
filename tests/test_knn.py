"""Weighted kNN classifier against an independent NumPy brute force, chunked and sharded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax.evaluate import knn


def numpy_knn(train, train_labels, test, num_classes, k, temperature):
  """The weighted vote written out directly: full similarity matrix, stable argsort, float64.

  A stable sort of -sim keeps the lower train index first among equal similarities,
  and np.argmax takes the lower class among equal scores.
  """
  tr = train.astype(np.float64)
  te = test.astype(np.float64)
  tr /= np.linalg.norm(tr, axis=1, keepdims=True)
  te /= np.linalg.norm(te, axis=1, keepdims=True)
  sim = te @ tr.T
  preds = []
  for i in range(te.shape[0]):
    neighbours = np.argsort(-sim[i], kind="stable")[:k]
    scores = np.zeros(num_classes)
    for j in neighbours:
      scores[train_labels[j]] += np.exp(sim[i, j] / temperature)
    preds.append(np.argmax(scores))
  return np.array(preds)


def random_problem(n_train=300, n_test=70, dim=16, num_classes=5, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n_train, dim)).astype(np.float32),
          rng.integers(0, num_classes, size=n_train),
          rng.normal(size=(n_test, dim)).astype(np.float32))


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_matches_numpy_reference(temperature):
  train, labels, test = random_problem()
  ks = (1, 5, 20)
  got = knn.knn_classify(train, labels, test, num_classes=5, k=ks, temperature=temperature)
  assert sorted(got) == list(ks)
  for k in ks:
    want = numpy_knn(train, labels, test, 5, k, temperature)
    assert got[k].shape == (70,)
    np.testing.assert_array_equal(got[k], want, err_msg=f"k={k}")
  # Several k at once must agree with asking for one k at a time.
  single = knn.knn_classify(train, labels, test, num_classes=5, k=20, temperature=temperature)
  np.testing.assert_array_equal(single[20], got[20])


def test_chunked_equals_unchunked():
  train, labels, test = random_problem()
  kwargs = dict(num_classes=5, k=(1, 5, 20), temperature=0.1)
  chunked = knn.knn_classify(train, labels, test, chunk_size=16, **kwargs)  # 70 = 4 * 16 + 6
  whole = knn.knn_classify(train, labels, test, chunk_size=1000, **kwargs)
  for k in (1, 5, 20):
    np.testing.assert_array_equal(chunked[k], whole[k])


def test_one_compilation_for_all_chunks():
  # The last, partial chunk is padded, so it reuses the compiled function of the full chunks.
  train, labels, test = random_problem(dim=12)  # A dim no other test uses: a fresh cache entry.
  # On CPU the similarities are jitted and the top-k runs on the host; elsewhere one fused function.
  fn = knn._similarities_jit if jax.default_backend() == "cpu" else knn._classify_chunk
  before = fn._cache_size()
  knn.knn_classify(train, labels, test, num_classes=5, k=5, chunk_size=16)
  assert fn._cache_size() == before + 1


def test_host_topk_matches_lax_top_k_including_ties():
  rng = np.random.default_rng(0)
  # Few distinct values: many ties, also at the k-th position.
  sims = rng.integers(0, 6, size=(64, 300)).astype(np.float32) / 5
  for k in (1, 7, 50, 300):
    vals, idx = knn._topk_host(sims, k)
    ref_vals, ref_idx = jax.lax.top_k(jnp.asarray(sims), k)
    np.testing.assert_array_equal(vals, np.asarray(ref_vals))
    np.testing.assert_array_equal(idx, np.asarray(ref_idx))


@pytest.mark.parametrize("n_train", [304, 300])  # Divisible by the 8 devices, and not.
def test_sharded_equals_single_device(n_train):
  train, labels, test = random_problem(n_train=n_train)
  mesh = jax.make_mesh((8,), ("data",))
  # k=200 exceeds a shard's 38 rows, so the merge must draw on several shards' candidates.
  # (Masking of the padding rows is pinned down by the next test: here they barely move the vote.)
  kwargs = dict(num_classes=5, k=(1, 5, 20, 200), temperature=0.1, chunk_size=16)
  sharded = knn.knn_classify(train, labels, test, mesh=mesh, **kwargs)
  single = knn.knn_classify(train, labels, test, **kwargs)
  for k in (1, 5, 20, 200):
    np.testing.assert_array_equal(sharded[k], single[k], err_msg=f"k={k}")
  np.testing.assert_array_equal(sharded[20], numpy_knn(train, labels, test, 5, 20, 0.1))


def test_sharded_padding_is_never_a_neighbour():
  # Every real train feature has negative cosine with every test feature, so an unmasked
  # zero padding row (sim 0, label 0) would be the nearest neighbour; no real label is 0.
  rng = np.random.default_rng(1)
  direction = np.zeros(8, np.float32)
  direction[0] = 1.0
  train = -direction + 0.1 * rng.normal(size=(13, 8)).astype(np.float32)  # 13 = 2 * 8 - 3 padding rows.
  labels = rng.integers(1, 4, size=13)
  test = direction + 0.1 * rng.normal(size=(5, 8)).astype(np.float32)
  mesh = jax.make_mesh((8,), ("data",))
  got = knn.knn_classify(train, labels, test, num_classes=4, k=(1, 13), mesh=mesh)
  for k in (1, 13):
    np.testing.assert_array_equal(got[k], numpy_knn(train, labels, test, 4, k, 0.1))
    assert np.all(got[k] != 0)


@pytest.mark.parametrize("sharded", [False, True])
def test_ties_are_deterministic(sharded):
  # Rows 3 and 12 (on different shards of an 8-device mesh) are the same vector as the test
  # feature: k=1 takes the lower train index (label 4); k=2 ties classes 4 and 2 exactly and
  # takes the lower class (2).
  rng = np.random.default_rng(2)
  train = rng.normal(size=(16, 8)).astype(np.float32)
  query = rng.normal(size=8).astype(np.float32)
  train[3] = train[12] = query
  train[[i for i in range(16) if i not in (3, 12)]] -= 10 * query  # Far from the query.
  labels = np.zeros(16, np.int64)
  labels[3], labels[12] = 4, 2
  mesh = jax.make_mesh((8,), ("data",)) if sharded else None
  got = knn.knn_classify(train, labels, query[None], num_classes=5, k=(1, 2), mesh=mesh)
  assert got[1].tolist() == [4]
  assert got[2].tolist() == [2]


def test_clustered_features_are_classified_perfectly():
  rng = np.random.default_rng(3)
  centers = np.eye(16, dtype=np.float32)[:5] * 10
  train_labels = np.repeat(np.arange(5), 20)
  test_labels = rng.permutation(np.repeat(np.arange(5), 6))
  train = centers[train_labels] + rng.normal(size=(100, 16)).astype(np.float32)
  test = centers[test_labels] + rng.normal(size=(30, 16)).astype(np.float32)
  acc = knn.knn_accuracy(train, train_labels, test, test_labels, num_classes=5, k=(1, 10), chunk_size=8)
  assert acc == {1: 1.0, 10: 1.0}


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=301), "larger than the number of train examples"),
    (dict(k=(5, 400)), "larger than the number of train examples"),
    (dict(k=0), "positive int"),
    (dict(temperature=0.0), "temperature"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(train_labels=np.arange(300) % 6), r"\[0, num_classes=5\)"),
    (dict(train_labels=np.zeros(299, np.int64)), "shape"),
    (dict(train_labels=np.zeros(300, np.float32)), "integers"),
    (dict(test_features=np.zeros((4, 15), np.float32)), "dim"),
    (dict(test_features=np.zeros(16, np.float32)), "2-D"),
])
def test_invalid_inputs_raise(kwargs, match):
  train, labels, test = random_problem()
  args = dict(train_features=train, train_labels=labels, test_features=test, num_classes=5)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    knn.knn_classify(**args)


def test_accuracy_checks_test_labels():
  train, labels, test = random_problem()
  with pytest.raises(ValueError, match="test_labels"):
    knn.knn_accuracy(train, labels, test, np.zeros(69, np.int64), num_classes=5, k=5)
