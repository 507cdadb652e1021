import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pe_jax.models import weights
from pe_jax.training import optimizer as optimizer_lib

HEADS = [("plain", {}), ("projected", {"projection_dim": 4})]


def by_path(state: nnx.State) -> dict[str, object]:
  return {weights.path_str(k): v.get_value() for k, v in nnx.to_flat_state(state)}


def test_decay_mask_spares_biases_norm_scales_and_head_scalars(tiny_model):
  mask = by_path(optimizer_lib.decay_mask(tiny_model(HEADS)[1]))
  decayed = {p for p, m in mask.items() if m}
  spared = set(mask) - decayed
  assert decayed and spared
  # Every parameter is a matrix (kernel, embedding table) or one of the spared kinds, so a new
  # kind of parameter makes this test say which way it went.
  assert all(p.endswith((".kernel", ".embedding")) for p in decayed), sorted(decayed)
  assert all(p.endswith((".bias", ".scale", ".log_scale")) for p in spared), sorted(spared)
  assert {"heads.plain.bias", "heads.plain.log_scale", "encoder.embeddings.norm.scale",
          "encoder.layers.0.mlp_in.bias"} <= spared
  assert {"heads.projected.projection.kernel", "encoder.embeddings.word.embedding",
          "encoder.projection.kernel"} <= decayed


def test_weight_decay_moves_only_matrices(base_config, tiny_model):
  # With zero gradients AdamW's step is pure weight decay: p <- p * (1 - lr * wd) on decayed leaves.
  config = base_config()
  config.optimizer.update(dict(learning_rate=0.1, weight_decay=0.5, warmup_steps=0, decay="constant"))
  params = tiny_model(HEADS)[1]
  tx = optimizer_lib.make_optimizer(config.optimizer, optimizer_lib.learning_rate_schedule(config))
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  new = by_path(jax.tree.map(lambda p, u: p + u, params, updates))
  old = by_path(params)
  mask = by_path(optimizer_lib.decay_mask(params))
  for path, decayed in mask.items():
    expected = np.asarray(old[path]) * (1 - 0.05 if decayed else 1.0)
    np.testing.assert_allclose(np.asarray(new[path]), expected, rtol=1e-6, atol=0, err_msg=path)


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_schedule_warms_up_then_decays_to_final_fraction(base_config, decay):
  config = base_config()
  config.total_steps = 20
  config.optimizer.update(dict(learning_rate=1e-3, warmup_steps=4, decay=decay, final_lr_fraction=0.1))
  schedule = optimizer_lib.learning_rate_schedule(config)
  lr = [float(schedule(s)) for s in range(21)]
  np.testing.assert_allclose(lr[:5], [0, 2.5e-4, 5e-4, 7.5e-4, 1e-3], rtol=1e-6)
  final = 1e-3 if decay == "constant" else 1e-4
  np.testing.assert_allclose(lr[20], final, rtol=1e-5)
  if decay == "cosine":  # halfway through the decay: alpha + (1 - alpha) / 2
    np.testing.assert_allclose(lr[12], 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 8 / 16))), rtol=1e-5)
  assert all(a >= b for a, b in zip(lr[4:], lr[5:]))


def test_schedule_with_warmup_longer_than_training(base_config):
  config = base_config()
  config.total_steps = 3
  config.optimizer.update(dict(learning_rate=1e-3, warmup_steps=10, decay="cosine"))
  lr = [float(optimizer_lib.learning_rate_schedule(config)(s)) for s in range(4)]
  assert all(math.isfinite(v) for v in lr)
  assert lr[0] == 0 and lr[1] > 0


def test_unknown_decay_names_the_setting(base_config):
  config = base_config()
  config.optimizer.decay = "exponential"
  with pytest.raises(ValueError, match=r"config\.optimizer\.decay='exponential'.*cosine"):
    optimizer_lib.learning_rate_schedule(config)


def test_new_parameters_learn_at_their_multiplied_rate(base_config, tiny_model):
  # Adam's first update is lr * sign(grad) (up to eps): each group moves by its own learning rate.
  config = base_config()
  config.optimizer.update(dict(learning_rate=1e-3, warmup_steps=0, decay="constant", weight_decay=0.0,
                               projection_lr_multiplier=10.0, head_lr_multiplier=100.0))
  params = tiny_model(HEADS)[1]
  tx = optimizer_lib.make_optimizer(config.optimizer, optimizer_lib.learning_rate_schedule(config))
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  step = {p: float(np.abs(np.asarray(u)).max()) for p, u in by_path(updates).items()}
  expected = {"encoder.embeddings.norm.bias": 1e-3, "encoder.layers.0.mlp_in.kernel": 1e-3,
              "encoder.projection.kernel": 1e-2, "heads.plain.bias": 1e-1,
              "heads.projected.projection.kernel": 1e-1}
  for path, lr in expected.items():
    np.testing.assert_allclose(step[path], lr, rtol=1e-4, err_msg=path)
  assert {optimizer_lib.param_group(k) for k, _ in nnx.to_flat_state(params)} == {"encoder", "projection", "heads"}


@pytest.mark.parametrize("frozen_layers", [1, 2])
def test_a_frozen_trunk_never_moves_and_keeps_no_state(base_config, tiny_model, frozen_layers):
  """The embeddings and the first k layers take no step, weight decay included; the rest learn as before."""
  config = base_config()
  config.optimizer.update(dict(learning_rate=1e-3, warmup_steps=0, decay="constant", weight_decay=0.5))
  params = tiny_model(HEADS)[1]
  schedule = optimizer_lib.learning_rate_schedule(config)
  tx = optimizer_lib.make_optimizer(config.optimizer, schedule, frozen_layers=frozen_layers)
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  moved = {p for p, u in by_path(updates).items() if np.abs(np.asarray(u)).max() > 0}
  frozen = {p for p in by_path(params) if p.startswith("encoder.embeddings.")
            or any(p.startswith(f"encoder.layers.{i}.") for i in range(frozen_layers))}
  assert frozen and not moved & frozen
  assert moved == set(by_path(params)) - frozen
  plain = optimizer_lib.make_optimizer(config.optimizer, schedule)
  count = lambda state: sum(x.size for x in jax.tree.leaves(state))
  assert count(tx.init(params)) < count(plain.init(params))  # no Adam moments for the trunk


@pytest.mark.parametrize("value", [-1, 3])
def test_frozen_layers_outside_the_encoder_names_the_key(base_config, value):
  config = base_config()
  config.model.frozen_layers = value
  with pytest.raises(ValueError, match=r"config\.model\.frozen_layers=.* must be an integer from 0 .* to 2"):
    optimizer_lib.check_frozen_layers(config, num_layers=2)
