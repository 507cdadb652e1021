import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pe_jax.models.heads import TaskHead, TaskHeads
from pe_jax.training.losses import in_batch_contrastive_loss, pair_bce_loss

RULES = (("embed", None),)


@pytest.fixture
def mesh_context():
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
    yield mesh


def unit(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def make_heads():
  return TaskHeads([("emoji", {}),
                    ("stsb", dict(scale_init=10.0, bias_init=-5.0, projection_dim=4))],
                   dim=8, rngs=nnx.Rngs(0))


def test_heads_are_created_with_their_options_and_axis_names(mesh_context):
  heads = make_heads()
  assert list(heads) == ["emoji", "stsb"]
  assert float(heads["emoji"].scale()) == pytest.approx(20.0)
  assert float(heads["emoji"].bias[...]) == 0.0 and heads["emoji"].projection is None
  assert float(heads["stsb"].scale()) == pytest.approx(10.0)
  assert float(heads["stsb"].bias[...]) == -5.0
  kernel = heads["stsb"].projection.kernel
  assert kernel.shape == (8, 4) and kernel.get_metadata()["out_sharding"] == ("embed", None)
  assert heads["stsb"].log_scale.get_metadata()["out_sharding"] == ()


def test_forward_projects_and_renormalises(mesh_context):
  heads = make_heads()
  x = unit(jax.random.normal(jax.random.key(1), (3, 8)))
  np.testing.assert_array_equal(heads["emoji"](x), x)
  y = heads["stsb"](x)
  want = np.asarray(x) @ np.asarray(heads["stsb"].projection.kernel[...])
  want /= np.linalg.norm(want, axis=-1, keepdims=True)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_scale_is_clipped_at_max_scale(mesh_context):
  head = TaskHead(8, rngs=nnx.Rngs(0), scale_init=50.0, max_scale=60.0)
  head.log_scale[...] = jnp.asarray(math.log(1000.0))
  assert float(head.scale()) == pytest.approx(60.0)


def test_gradients_reach_scale_bias_and_projection(mesh_context):
  heads = make_heads()
  x = unit(jax.random.normal(jax.random.key(2), (4, 8)))
  y = unit(jax.random.normal(jax.random.key(3), (4, 8)))

  @nnx.jit
  def loss(heads):
    bce = heads["stsb"]
    emoji = heads["emoji"]
    return (pair_bce_loss(bce(x), bce(y), jnp.array([1.0, 0.0, 0.5, 1.0]), bce.scale(), bce.bias[...])
            + in_batch_contrastive_loss(emoji(x), emoji(y), emoji.scale()))

  grads = nnx.grad(loss)(heads)
  for path in (("stsb", "log_scale"), ("stsb", "bias"), ("emoji", "log_scale")):
    g = grads[path[0]][path[1]][...]
    assert np.isfinite(g) and g != 0, path
  assert np.abs(grads["stsb"]["projection"]["kernel"][...]).sum() > 0


@pytest.mark.parametrize("specs, match", [
    ([("emoji", {}), ("emoji", {})], "'emoji' is listed twice"),
    ([("items", {})], "'items' must be an identifier"),
    ([("tweet-topic", {})], "'tweet-topic' must be an identifier"),
    ([("emoji", dict(scale_init=200.0))], "'emoji'.*scale_init"),
    ([("emoji", dict(temperature=1.0))], "'emoji'.*temperature"),
])
def test_bad_specs_name_the_head(mesh_context, specs, match):
  with pytest.raises(ValueError, match=match):
    TaskHeads(specs, dim=8, rngs=nnx.Rngs(0))
