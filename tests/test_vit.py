"""Vision Transformer backbone: shapes, sin-cos embeddings, parameter count, gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax.models.vit import VIT_VARIANTS, VisionTransformer, build_vit, sincos_2d_position_embedding


def mae_1d_sincos(embed_dim, pos):
  """MAE's get_1d_sincos_pos_embed_from_grid."""
  omega = np.arange(embed_dim // 2, dtype=np.float64)
  omega /= embed_dim / 2.0
  omega = 1.0 / 10000**omega
  out = np.einsum("m,d->md", pos.reshape(-1), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d_sincos(embed_dim, grid_h, grid_w):
  """MAE's get_2d_sincos_pos_embed, generalised to a grid_h x grid_w grid."""
  grid = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))  # w first
  grid = np.stack(grid, axis=0).reshape([2, 1, grid_h, grid_w])
  emb_h = mae_1d_sincos(embed_dim // 2, grid[0])
  emb_w = mae_1d_sincos(embed_dim // 2, grid[1])
  return np.concatenate([emb_h, emb_w], axis=1)


def layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


@pytest.fixture(scope="module")
def vit_and_params():
  model = build_vit("vit_test", patch_size=4)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  return model, variables


def test_output_shapes_at_two_resolutions(vit_and_params):
  model, variables = vit_and_params
  assert set(variables) == {"params"}  # no BatchNorm statistics
  rng = np.random.default_rng(0)
  big = jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32)
  small = jnp.asarray(rng.normal(size=(2, 16, 8, 3)), jnp.float32)  # non-square local crop
  out = model.apply(variables, big, train=False)
  assert out.shape == (2, 32) and out.dtype == jnp.float32
  assert model.apply(variables, small, train=False).shape == (2, 32)
  tokens = model.apply(variables, big, train=False, return_tokens=True)
  assert tokens["cls"].shape == (2, 32) and tokens["patches"].shape == (2, 64, 32)
  np.testing.assert_allclose(tokens["cls"], out, atol=1e-6)
  assert model.apply(variables, small, train=False, return_tokens=True)["patches"].shape == (2, 8, 32)


@pytest.mark.parametrize("grid_h,grid_w,width", [(4, 4, 32), (3, 5, 16), (7, 2, 8)])
def test_sincos_matches_mae(grid_h, grid_w, width):
  ours = sincos_2d_position_embedding(grid_h, grid_w, width)
  assert ours.shape == (grid_h * grid_w, width) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, mae_2d_sincos(width, grid_h, grid_w), atol=1e-6)


def test_sincos_rejects_width_not_divisible_by_4():
  with pytest.raises(ValueError, match="divisible by 4"):
    sincos_2d_position_embedding(2, 2, 10)


def test_embedding_layer_against_numpy():
  """With no blocks, tokens are LN(patch @ W + b + pos) and the CLS output is LN(cls): checks the
  patch order, the orientation of the position table and the CLS token's zero position."""
  model = VisionTransformer(patch_size=4, width=16, depth=0, num_heads=2)
  x = np.random.default_rng(1).normal(size=(2, 12, 8, 3)).astype(np.float32)
  variables = model.init(jax.random.PRNGKey(1), jnp.asarray(x), train=False)
  out = model.apply(variables, jnp.asarray(x), train=False, return_tokens=True)
  params = jax.tree.map(np.asarray, variables["params"])
  patches = x.reshape(2, 3, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 48)
  tokens = (patches @ params["patch_embed"]["kernel"].reshape(48, 16) + params["patch_embed"]["bias"]
            + mae_2d_sincos(16, 3, 2))
  norm = params["encoder_norm"]
  np.testing.assert_allclose(out["patches"], layer_norm(tokens, norm["scale"], norm["bias"]), atol=1e-4)
  cls = layer_norm(params["cls_token"].reshape(1, 16), norm["scale"], norm["bias"])
  np.testing.assert_allclose(out["cls"], np.broadcast_to(cls, (2, 16)), atol=1e-4)


def test_vit_small_parameter_count():
  d, p, hidden = 384, 16, 1536
  per_block = 4 * d + 3 * (d * d + d) + (d * d + d) + (d * hidden + hidden + hidden * d + d)
  expected = p * p * 3 * d + d + d + 12 * per_block + 2 * d
  model = build_vit("vit_small", patch_size=16)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False))
  assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == expected
  assert expected == 21_590_016  # timm's vit_small_patch16_224 less its classifier and learned pos_embed


def test_invalid_inputs_raise(vit_and_params):
  model, variables = vit_and_params
  with pytest.raises(ValueError, match="multiples of patch_size"):
    model.apply(variables, jnp.zeros((1, 30, 32, 3)), train=False)
  with pytest.raises(ValueError, match="vit_small"):
    build_vit("vit_huge", patch_size=4)
  with pytest.raises(ValueError, match="num_heads"):
    build_vit("vit_test", patch_size=4, num_heads=3).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  assert set(VIT_VARIANTS) == {"vit_test", "vit_tiny", "vit_small", "vit_base"}


def test_not_permutation_invariant(vit_and_params):
  model, variables = vit_and_params
  x = np.random.default_rng(2).normal(size=(1, 32, 32, 3)).astype(np.float32)
  patches = x.reshape(1, 8, 4, 8, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(1, 64, 4, 4, 3)
  perm = np.random.default_rng(3).permutation(64)
  shuffled = patches[:, perm].reshape(1, 8, 8, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(1, 32, 32, 3)
  identity = patches.reshape(1, 8, 8, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(1, 32, 32, 3)
  np.testing.assert_array_equal(identity, x)  # the patch split / reassembly is exact
  out = model.apply(variables, jnp.asarray(x), train=False)
  out_shuffled = model.apply(variables, jnp.asarray(shuffled), train=False)
  assert np.max(np.abs(np.asarray(out) - np.asarray(out_shuffled))) > 1e-2


def test_jit_gradients_finite(vit_and_params):
  model, variables = vit_and_params
  x = jnp.asarray(np.random.default_rng(4).normal(size=(4, 16, 16, 3)), jnp.float32)

  @jax.jit
  def loss_and_grad(params):
    return jax.value_and_grad(lambda p: jnp.mean(model.apply({"params": p}, x) ** 2))(params)

  loss, grads = loss_and_grad(variables["params"])
  assert np.isfinite(float(loss))
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert float(jnp.abs(grads["cls_token"]).sum()) > 0 and float(jnp.abs(grads["patch_embed"]["kernel"]).sum()) > 0


def test_drop_path_and_bfloat16():
  x = jnp.asarray(np.random.default_rng(5).normal(size=(8, 16, 16, 3)), jnp.float32)
  model = build_vit("vit_test", patch_size=4, drop_path_rate=0.5)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  evaluated = model.apply(variables, x, train=False)
  # No 'dropout' rng (or train=False): stochastic depth is off.
  np.testing.assert_allclose(model.apply(variables, x, train=True), evaluated, atol=1e-6)
  dropped = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  assert np.max(np.abs(np.asarray(dropped) - np.asarray(evaluated))) > 1e-3

  bf16 = build_vit("vit_test", patch_size=4, dtype=jnp.bfloat16)
  out = bf16.apply(variables, x, train=False)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, evaluated, atol=0.1)


def test_mean_pool_reads_the_patch_tokens_and_keeps_the_parameters(vit_and_params):
  """pool='mean' returns the mean of the final-normed patch tokens, with the same parameters."""
  model, variables = vit_and_params
  mean_model = build_vit("vit_test", patch_size=4, pool="mean")
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 16, 16, 3)), jnp.float32)
  tokens = model.apply(variables, x, train=False, return_tokens=True)
  pooled = mean_model.apply(variables, x, train=False)
  np.testing.assert_allclose(pooled, np.asarray(tokens["patches"]).mean(axis=1), atol=1e-6)
  np.testing.assert_allclose(tokens["pooled"], tokens["cls"], atol=0)
  assert not np.allclose(pooled, tokens["cls"], atol=1e-3)
  with pytest.raises(ValueError, match="config.model.pool"):
    build_vit("vit_test", patch_size=4, pool="max").init(jax.random.PRNGKey(0), x)
