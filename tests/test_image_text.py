"""Image-text building blocks (issue 16): CLIP and SigLIP losses against NumPy references and
across devices, the ring-chunked SigLIP loss, the byte-level text tower, zero-shot weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from reference import numerical_grad
from sslax import losses, parallel
from sslax.evaluate import zero_shot
from sslax.models.text import END, PAD, TextTransformer, tokenize


def _normalize(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_clip(img, txt, scale):
  """CLIP's pseudo-code (Radford et al. 2021, figure 3) in float64."""
  logits = scale * _normalize(img.astype(np.float64)) @ _normalize(txt.astype(np.float64)).T
  n = len(img)

  def ce(lg):  # Cross-entropy with labels arange(n), rows as samples.
    lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
    return np.mean(lse - lg[np.arange(n), np.arange(n)])

  return (ce(logits) + ce(logits.T)) / 2


def numpy_siglip(img, txt, t, b):
  """SigLIP's pseudo-code (Zhai et al. 2023, algorithm 1) in float64."""
  logits = t * _normalize(img.astype(np.float64)) @ _normalize(txt.astype(np.float64)).T + b
  labels = 2 * np.eye(len(img)) - 1
  return -np.sum(np.log(1 / (1 + np.exp(-labels * logits)))) / len(img)


def _pairs(seed, n=16, d=8):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)


def test_clip_loss_matches_numpy_value_and_gradient_and_clips_the_scale():
  img, txt = _pairs(0)
  log_scale = jnp.float32(np.log(1 / 0.07))
  loss, metrics = losses.clip_loss(img, txt, logit_scale=log_scale)
  np.testing.assert_allclose(float(loss), numpy_clip(img, txt, 1 / 0.07), rtol=1e-5)
  grad = jax.grad(lambda a: losses.clip_loss(a, txt, logit_scale=log_scale)[0])(img)
  np.testing.assert_allclose(np.asarray(grad), numerical_grad(lambda a: numpy_clip(a, txt, 1 / 0.07), img.astype(np.float64)),
                             rtol=1e-3, atol=1e-5)
  # Matched pairs rank first; above the clip the scale is 100 and gets no gradient.
  _, m = losses.clip_loss(img, img, logit_scale=jnp.float32(np.log(200.0)))
  assert float(m["image_to_text_top1"]) == float(m["text_to_image_top1"]) == 1.0 and float(m["logit_scale"]) == 100
  assert float(jax.grad(lambda s: losses.clip_loss(img, txt, logit_scale=s)[0])(jnp.float32(np.log(200.0)))) == 0.0


def test_siglip_loss_matches_numpy():
  img, txt = _pairs(1)
  loss, _ = losses.siglip_loss(img, txt, logit_scale=jnp.float32(np.log(10.0)), logit_bias=jnp.float32(-10.0))
  np.testing.assert_allclose(float(loss), numpy_siglip(img, txt, 10.0, -10.0), rtol=1e-5)


@pytest.mark.parametrize("name", ["clip", "siglip", "siglip_unchunked"])
def test_eight_devices_equal_one_device_in_loss_and_gradients(name):
  img, txt = _pairs(2)
  params = (jnp.float32(np.log(10.0)), jnp.float32(-10.0))
  mesh = parallel.make_mesh(jax.devices()[:8])

  def loss_fn(a, b, p, axis_name=None):
    if name == "clip":
      return losses.clip_loss(a, b, logit_scale=p[0], axis_name=axis_name)[0]
    return losses.siglip_loss(a, b, logit_scale=p[0], logit_bias=p[1], axis_name=axis_name,
                              chunked=name == "siglip")[0]

  sharded = jax.shard_map(lambda a, b, p: loss_fn(a, b, p, parallel.DATA_AXIS), mesh=mesh,
                          in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS), P()), out_specs=P())
  np.testing.assert_allclose(float(jax.jit(sharded)(img, txt, params)), float(loss_fn(img, txt, params)), rtol=1e-6)
  g8 = jax.jit(jax.grad(sharded, (0, 1, 2)))(img, txt, params)
  g1 = jax.grad(loss_fn, (0, 1, 2))(img, txt, params)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_ring_chunked_siglip_equals_the_gathered_loss_and_holds_only_local_blocks():
  img, txt = _pairs(3, n=32)
  mesh = parallel.make_mesh(jax.devices()[:8])
  p = (jnp.float32(np.log(5.0)), jnp.float32(-3.0))

  def make(chunked):
    return jax.jit(jax.shard_map(
        lambda a, b: losses.siglip_loss(a, b, logit_scale=p[0], logit_bias=p[1], axis_name=parallel.DATA_AXIS,
                                        chunked=chunked)[0],
        mesh=mesh, in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)), out_specs=P()))

  chunked, gathered = make(True), make(False)
  np.testing.assert_allclose(float(chunked(img, txt)), float(gathered(img, txt)), rtol=1e-6)
  # The chunked program passes texts around the ring and never all-gathers them.
  hlo = chunked.lower(img, txt).as_text()
  assert "collective_permute" in hlo and "all_gather" not in hlo
  assert "all_gather" in gathered.lower(img, txt).as_text()


def test_zero_shot_weights_are_the_normalised_mean_of_normalised_template_embeddings():
  rng = np.random.default_rng(4)
  emb = rng.normal(size=(3, 5, 8))
  weights = zero_shot.zero_shot_weights(emb)
  for c in range(3):
    mean = np.mean([e / np.linalg.norm(e) for e in emb[c]], axis=0)
    np.testing.assert_allclose(weights[c], mean / np.linalg.norm(mean), rtol=1e-5)
  # Images equal to a class's weight are classified as that class; prompts are class-major.
  acc = zero_shot.zero_shot_accuracy(weights[[2, 0, 1]] * 3.0, np.array([2, 0, 1]), weights, ks=(1,))
  assert acc[1] == 1.0
  assert zero_shot.prompts(["cat", "dog"], ("a {}.", "the {}!")) == ["a cat.", "the cat!", "a dog.", "the dog!"]


def test_retrieval_recall_counts_the_rank_of_the_true_partner():
  img = np.eye(4, dtype=np.float32)
  txt = img[[0, 1, 3, 2]]  # Pairs 2 and 3 swapped: their partner ranks second.
  r = zero_shot.retrieval_recall(img, txt, ks=(1, 2))
  assert r["image_to_text_r@1"] == r["text_to_image_r@1"] == 0.5
  assert r["image_to_text_r@2"] == 1.0
  # With match ids, any partner of the same id counts: pairs 2 and 3 share an id, so both hit at 1.
  r = zero_shot.retrieval_recall(img, txt, ks=(1,), match=np.array([0, 1, 2, 2]))
  assert r["image_to_text_r@1"] == r["text_to_image_r@1"] == 1.0
  r = zero_shot.retrieval_recall(img, txt, ks=(1,), match=np.array([0, 1, 2, 3]))  # Distinct ids: as without.
  assert r["image_to_text_r@1"] == 0.5


def test_byte_tokens_and_the_causal_text_tower_read_up_to_the_end_token():
  tokens = tokenize(["a cat", "é!", "x" * 100], max_len=8)
  assert tokens.shape == (3, 8) and tokens[0, 0] == 1 and tokens[0, 6] == END and tokens[0, 7] == PAD
  assert list(tokens[1, 1:4]) == [b + 3 for b in "é!".encode()] and tokens[2, -1] == END  # Cut to fit.
  model = TextTransformer(width=32, depth=2, num_heads=4, max_len=8)
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(tokens))
  out = model.apply(variables, jnp.asarray(tokens))
  assert out.shape == (3, 32)
  # Tokens after the end token cannot reach its feature (causal attention); tokens before it do.
  after = tokens.copy()
  after[0, 7] = 50
  np.testing.assert_array_equal(np.asarray(model.apply(variables, jnp.asarray(after)))[0], np.asarray(out)[0])
  before = tokens.copy()
  before[0, 2] = 60
  assert np.abs(np.asarray(model.apply(variables, jnp.asarray(before)))[0] - np.asarray(out)[0]).max() > 1e-4


def test_clip_method_captions_its_labels_and_reports_zero_shot_and_retrieval(tmp_path):
  import copy

  from reference import load_config
  from sslax import train
  from sslax.methods.clip import CIFAR10_CLASSES, CLIP

  config, _ = load_config("clip", **{"data.source": "synthetic", "data.synthetic.num_train_examples": 64,
                                     "data.synthetic.num_eval_examples": 32, "knn.at_end": True})
  method = CLIP(copy.deepcopy(config), total_steps=6)
  labels = jnp.array([0, 3, 9, 3])
  tokens = np.asarray(method.captions({"label": labels}, jnp.int32(5), None))
  texts = [bytes(int(t) - 3 for t in row if t > END).decode() for row in tokens]
  for text, label in zip(texts, [0, 3, 9, 3]):
    assert CIFAR10_CLASSES[label] in text and text in zero_shot.prompts([CIFAR10_CLASSES[label]])
  # Templates are drawn per example and step: over 64 captions of one class, several templates appear.
  many = np.asarray(method.captions({"label": jnp.zeros(64, jnp.int32)}, jnp.int32(1), None))
  assert len({row.tobytes() for row in many}) > 3

  summary = train.train_and_evaluate(config, str(tmp_path / "w"), mesh=parallel.make_mesh(jax.devices()[:2]))
  for key in ("zero_shot_top1", "zero_shot_top5", "image_to_text_r@1", "text_to_image_r@5", "knn_top1"):
    assert 0.0 <= summary[key] <= 1.0
  assert summary["zero_shot_top5"] >= summary["zero_shot_top1"] and np.isfinite(summary["loss"])


def _captioned_folder(root, n_per_class=8, size=12):
  """class_a/ and class_b/ of random PNGs, each with a .txt of one or two captions."""
  from PIL import Image

  rng = np.random.default_rng(0)
  for c, name in enumerate(("class_a", "class_b")):
    (root / name).mkdir(parents=True)
    for i in range(n_per_class):
      Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"im{i}.png")
      lines = [f"picture {i} of {name}"] + ([f"another view {i} of {name}"] if i % 2 else [])
      (root / name / f"im{i}.txt").write_text("\n".join(lines) + "\n")
  return root


def _decode(tokens):
  return bytes(int(t) - 3 for t in tokens if t > END).decode()


def test_folder_captions_from_txt_files_and_csv_with_clear_errors(tmp_path):
  from sslax.data import load_image_folder
  from sslax.data.sources import DatasetNotFoundError

  root = _captioned_folder(tmp_path / "imgs")
  data = load_image_folder(str(root), image_size=12, captions="txt", max_captions=3, caption_max_len=40)
  assert data.captions.shape == (16, 3, 40)
  assert [_decode(t) for t in data.captions[0]] == ["picture 0 of class_a"] * 3  # One caption, cycled.
  assert [_decode(t) for t in data.captions[1]] == ["picture 1 of class_a", "another view 1 of class_a",
                                                    "picture 1 of class_a"]
  assert _decode(data.captions[8, 0]) == "picture 0 of class_b" and data.labels[8] == 1
  csv_path = tmp_path / "captions.csv"
  csv_path.write_text("path,caption\n" + "".join(f"{c}/im{i}.png,a {c} number {i}\n"
                                                   for c in ("class_a", "class_b") for i in range(8)))
  data = load_image_folder(str(root), image_size=12, captions=str(csv_path), max_captions=2, caption_max_len=40)
  assert _decode(data.captions[9, 1]) == "a class_b number 1"
  csv_path.write_text("path,caption\nclass_a/im0.png,only one\n")
  with pytest.raises(DatasetNotFoundError, match=r"im1.png' has no caption in .*captions.csv"):
    load_image_folder(str(root), image_size=12, captions=str(csv_path))
  (root / "class_a" / "im3.txt").unlink()
  with pytest.raises(DatasetNotFoundError, match=r"No caption file .*im3.txt"):
    load_image_folder(str(root), image_size=12, captions="txt")


def test_clip_trains_on_dataset_captions_one_drawn_per_step_the_same_on_any_device_count(tmp_path):
  import copy

  from reference import load_config
  from sslax import train
  from sslax.config_utils import ConfigError
  from sslax.methods.clip import CLIP

  root = _captioned_folder(tmp_path / "imgs")
  overrides = {"data.source": "folder", "data.folder": str(root), "data.eval_folder": str(root),
               "data.image_size": 12, "data.captions": "txt", "clip.captions": "dataset", "batch_size": 8,
               "augment.crop_size": 8, "knn.at_end": True, "knn.k": 5, "clip.class_names": ("class_a", "class_b")}
  config, _ = load_config("clip", **overrides)
  method = CLIP(copy.deepcopy(config), total_steps=6)
  assert method.needs_caption and not method.needs_label
  options = np.arange(16 * 3 * 5, dtype=np.int32).reshape(16, 3, 5)  # Distinct tokens per caption.

  def pick(n_devices):
    mesh = parallel.make_mesh(jax.devices()[:n_devices])
    fn = jax.shard_map(lambda b: method.captions(b, jnp.int32(4), parallel.DATA_AXIS), mesh=mesh,
                       in_specs=P(parallel.DATA_AXIS), out_specs=P(parallel.DATA_AXIS))
    return np.asarray(jax.jit(fn)({"caption": jnp.asarray(options)}))

  one = pick(1)
  np.testing.assert_array_equal(pick(8), one)
  chosen = [next(c for c in range(3) if np.array_equal(one[i], options[i, c])) for i in range(16)]  # Always one of its own.
  assert len(set(chosen)) > 1  # Drawn per example.

  summary = train.train_and_evaluate(config, str(tmp_path / "w"), mesh=parallel.make_mesh(jax.devices()[:2]))
  for key in ("image_to_text_r@1", "text_to_image_r@5", "knn_top1", "zero_shot_top1"):
    assert 0.0 <= summary[key] <= 1.0
  assert np.isfinite(summary["loss"])
  broken, _ = load_config("clip", **{"clip.captions": "dataset"})
  with pytest.raises(ConfigError, match="data.captions"):
    CLIP.validate_config(broken)


def test_tfds_caption_feature_is_read_as_the_images_captions(tmp_path):
  """A TFDS dataset shaped like coco_captions (a sequence of {'text'} per image), built here."""
  import tensorflow_datasets as tfds

  from sslax.data import load_tfds
  from sslax.data.sources import DatasetNotFoundError

  class SslaxCaptionsTest(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(8, 8, 3)),
          "label": tfds.features.ClassLabel(num_classes=2),
          "captions": tfds.features.Sequence({"text": tfds.features.Text()})}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      rng = np.random.default_rng(0)
      for i in range(6):
        texts = [f"image {i} caption {j}" for j in range(1 + i % 3)]
        yield i, {"image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "label": i % 2,
                  "captions": {"text": texts}}

  SslaxCaptionsTest(data_dir=str(tmp_path)).download_and_prepare()
  data = load_tfds("sslax_captions_test", "train", data_dir=str(tmp_path), caption_feature="captions/text",
                   max_captions=2, caption_max_len=32)
  assert data.captions.shape == (6, 2, 32)
  by_image = {tuple(_decode(t) for t in caps) for caps in data.captions}
  assert ("image 0 caption 0", "image 0 caption 0") in by_image  # One caption, cycled.
  assert ("image 2 caption 0", "image 2 caption 1") in by_image  # Three captions, the first two kept.
  with pytest.raises(DatasetNotFoundError, match="no feature 'sentences/raw'"):
    load_tfds("sslax_captions_test", "train", data_dir=str(tmp_path), caption_feature="sentences/raw")
