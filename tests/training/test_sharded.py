"""The train step on a mesh of 8 fake CPU devices computes what it computes on one device."""

import jax
import numpy as np
import pytest
from flax import nnx

from pe_jax import sharding as sharding_lib
from pe_jax.training import optimizer as optimizer_lib
from pe_jax.training import train as train_lib
from pe_jax.training import workdir as workdir_lib
from pe_jax.training.batches import BatchBuilder
from pe_jax.training.step import TaskLoss, make_train_step

TASKS = ("alpha", "bravo", "charlie", "delta")
STEPS = 3


def mesh_axes(params) -> set[str]:
  """Mesh axes named by any parameter's sharding."""
  names = set()
  for leaf in jax.tree.leaves(params):
    for axis in leaf.sharding.spec:
      names.update(axis if isinstance(axis, tuple) else [axis] if axis else [])
  return names


def flat(params) -> dict[str, np.ndarray]:
  return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(params)}


@pytest.mark.cpu_devices(8)
def test_sharded_step_matches_single_device(base_config, labeling_task):
  """Same global batch, same initial weights, different meshes: same losses and weights.

  What is comparable: the loss is a function of the global batch, whose blocks (one per shard,
  each with its own task) are fixed when it is built. The batch is therefore built once, for 4
  data-parallel shards, and fed unchanged to every mesh, including one device, where the 4 blocks
  are still 4 blocks (`task_ids` has 4 entries) but one device computes all of them. Building
  it per mesh would not do: a different data-parallel size draws a different task schedule. The
  meshes only change where rows and weight slices live, hence the reduction order: equal up to
  float32 rounding, not bit for bit.
  """
  config = base_config()
  config.optimizer.warmup_steps = 0  # every step updates, so later losses see the sharded updates
  devices = jax.devices()
  meshes = {
      "one device": sharding_lib.single_device_mesh(devices[0]),
      "data=2,fsdp=2,tensor=2": sharding_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, devices),
  }
  head_specs = [(name, dict(config.tasks.emotion.head)) for name in TASKS]
  model, tokenizer, _ = train_lib.build_model(config, meshes["data=2,fsdp=2,tensor=2"], head_specs)
  graphdef, created = nnx.split(model)
  assert {"fsdp", "tensor"} <= mesh_axes(created), mesh_axes(created)  # created already sharded
  initial = jax.device_get(created)  # host copies: every run's step donates its own state
  builder = BatchBuilder({n: labeling_task(n) for n in TASKS}, {n: 0.25 for n in TASKS}, tokenizer,
                         mesh=meshes["data=2,fsdp=2,tensor=2"], batch_size_per_shard=4, seed=0, per_shard_tasks=True)
  batches = [jax.device_get(builder.build(s)[1]) for s in range(STEPS)]
  assert all(len(set(b["task_ids"].tolist())) == 4 for b in batches)
  schedule = optimizer_lib.learning_rate_schedule(config)
  tx = optimizer_lib.make_optimizer(config.optimizer, schedule)
  step = make_train_step(graphdef, tx, [TaskLoss(name, "bce") for name in TASKS], schedule)

  runs = {}
  for label, mesh in meshes.items():
    _, layout = workdir_lib.abstract_model(model.encoder.cfg, head_specs, mesh)
    params = jax.device_put(initial, jax.tree.map(lambda t: t.sharding, layout))
    state = train_lib._on_mesh({"step": np.int32(0), "params": params, "opt_state": tx.init(params)}, mesh)
    loss, shard_loss = [], []
    for batch in batches:
      state, metrics = step(state, jax.device_put(batch, sharding_lib.batch_sharding(mesh)))
      loss.append(float(metrics["loss"]))
      shard_loss.append(np.asarray(metrics["block_loss"]))
    if mesh.size > 1:  # the update keeps the weights laid out as they came
      assert {"fsdp", "tensor"} <= mesh_axes(state["params"]), (label, mesh_axes(state["params"]))
    runs[label] = dict(loss=np.array(loss), shard_loss=np.array(shard_loss), final=flat(state["params"]))

  reference = runs.pop("one device")
  assert len(set(np.round(reference["loss"], 4))) == STEPS  # the weights really moved
  for label, run in runs.items():
    np.testing.assert_allclose(run["loss"], reference["loss"], rtol=2e-5, err_msg=label)
    np.testing.assert_allclose(run["shard_loss"], reference["shard_loss"], rtol=2e-5, err_msg=label)
    for path, value in run["final"].items():
      np.testing.assert_allclose(value, reference["final"][path], rtol=1e-4, atol=2e-6,
                                 err_msg=f"{label}: {path} after {STEPS} steps")
