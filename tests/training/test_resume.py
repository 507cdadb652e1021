"""Resuming: after kill -9, on another mesh; the resumed steps are the ones the run would have taken."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from pe_jax import sharding as sharding_lib
from pe_jax.training import workdir as workdir_lib
from pe_jax.training.metrics_writer import METRICS_FILE, read_metrics
from pe_jax.training.train import train_and_evaluate

KILL_AFTER_STEP = 20
REPO = pathlib.Path(__file__).resolve().parents[2]


def train_losses(workdir) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def restore_params(workdir, step: int, mesh) -> dict[str, jax.Array]:
  encoder_config, head_specs, _ = workdir_lib.read_model_description(workdir)
  _, target = workdir_lib.abstract_model(encoder_config, head_specs, mesh)
  manager = ocp.CheckpointManager((workdir / workdir_lib.CHECKPOINTS).absolute(), item_names=("params", "train"))
  restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
  manager.close()
  return {"/".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(restored["params"])}


def interrupted_copy(workdir, dest, after_step: int):
  """A copy of a finished workdir as if its run had died right after the checkpoint of `after_step`."""
  shutil.copytree(workdir, dest)
  for path in (dest / workdir_lib.CHECKPOINTS).iterdir():
    if path.name.isdigit() and int(path.name) > after_step:
      shutil.rmtree(path)
  return dest


def test_a_resumed_run_takes_the_steps_the_run_would_have_taken(short_config, tmp_path):
  config = short_config()
  straight = tmp_path / "straight"
  train_and_evaluate(config, straight)
  resumed = interrupted_copy(straight, tmp_path / "resumed", after_step=2)
  train_and_evaluate(config, resumed)
  assert [r["step"] for r in read_metrics(resumed)] == [1, 2, 3, 4]  # what the dead run logged after step 2 is dropped
  assert read_metrics(resumed) == read_metrics(straight)  # bit for bit: losses, gradient norms, rates


@pytest.mark.slow
@pytest.mark.cpu_devices(8)
def test_a_checkpoint_restores_on_another_mesh(short_config, tmp_path):
  """Written on (data=1, fsdp=4, tensor=2), resumed on (data=4, fsdp=1, tensor=2).

  Restoring the step-2 checkpoint on either mesh or on one device gives the same weights, laid out
  for the mesh asked for. Both meshes have 4 data-parallel shards, hence the same task schedule and
  batches, so the steps resumed on the other mesh must be those of an uninterrupted run on the
  writing mesh up to float32 rounding (the meshes reduce in different orders).
  """
  writer = {"data": 1, "fsdp": 4, "tensor": 2}
  reader = {"data": 4, "fsdp": 1, "tensor": 2}

  def config(mesh):
    c = short_config()
    c.mesh.update(mesh)
    return c

  straight = tmp_path / "straight"
  train_and_evaluate(config(writer), straight)
  resumed = interrupted_copy(straight, tmp_path / "resumed", after_step=2)

  meshes = {"writer": sharding_lib.make_mesh(writer), "reader": sharding_lib.make_mesh(reader),
            "one device": sharding_lib.single_device_mesh()}
  restored = {label: restore_params(resumed, 2, mesh) for label, mesh in meshes.items()}
  for label in ("reader", "one device"):
    for path, value in restored["writer"].items():
      other = restored[label][path]
      assert other.sharding.mesh == meshes[label], (label, path)
      np.testing.assert_array_equal(np.asarray(other), np.asarray(value), err_msg=f"{label}: {path}")
  kernel = restored["writer"]["encoder/layers/0/mlp_in/kernel"]  # [embed 32, mlp 64] -> (fsdp, tensor)
  assert kernel.sharding.shard_shape(kernel.shape) == (8, 32)
  kernel = restored["reader"]["encoder/layers/0/mlp_in/kernel"]
  assert kernel.sharding.shard_shape(kernel.shape) == (32, 32)

  train_and_evaluate(config(reader), resumed)
  a, b = train_losses(straight), train_losses(resumed)
  assert sorted(b) == [1, 2, 3, 4]
  assert [a[s] for s in (1, 2)] == [b[s] for s in (1, 2)]  # logged before the checkpoint: kept as they were
  np.testing.assert_allclose([b[3], b[4]], [a[3], a[4]], rtol=1e-5)


def run_cli(workdir, tfds_dir, data_dir, log) -> subprocess.Popen:
  """The smoke recipe from the command line, its output to the open file `log` (a pipe nobody
  reads would fill up and stall the run)."""
  return subprocess.Popen(
      [sys.executable, "-m", "pe_jax.train", "--config", "configs/multitask.py:smoke", "--workdir", str(workdir),
       f"--config.tfds_dir={tfds_dir}"],
      cwd=REPO, env={**os.environ, "PE_JAX_DATA_DIR": str(data_dir)}, stdout=log, stderr=subprocess.STDOUT)


def last_logged_step(workdir) -> int:
  """The last step in metrics.jsonl while a run is writing it (a line may be half written)."""
  path = workdir / METRICS_FILE
  steps = [0]
  for line in path.read_text().splitlines() if path.exists() else []:
    try:
      steps.append(json.loads(line)["step"])
    except json.JSONDecodeError:
      pass
  return max(steps)


def test_kill_9_then_rerun_continues_exactly(smoke_run, shared_data_dir, tfds_dir, tmp_path):
  """`python -m pe_jax.train` killed with SIGKILL after step 20, then the same command again: the
  finished run logged every step once, with the losses of an uninterrupted run (`smoke_run`)."""
  workdir = tmp_path / "workdir"
  log_path = tmp_path / "train.log"
  tail = lambda: log_path.read_text()[-3000:]
  with open(log_path, "w") as log:
    proc = run_cli(workdir, tfds_dir, shared_data_dir, log)
    deadline = time.monotonic() + 300
    try:
      while last_logged_step(workdir) < KILL_AFTER_STEP:
        assert proc.poll() is None, f"the run ended before step {KILL_AFTER_STEP}:\n{tail()}"
        assert time.monotonic() < deadline, f"no step {KILL_AFTER_STEP} within 300 s"
        time.sleep(0.02)
    finally:
      proc.send_signal(signal.SIGKILL)  # kill -9: no cleanup, async checkpoint writes cut short
      proc.wait()
    assert last_logged_step(workdir) < smoke_run.config.total_steps, "the run finished before it was killed"
    rerun = run_cli(workdir, tfds_dir, shared_data_dir, log)
    try:
      assert rerun.wait(timeout=300) == 0, tail()
    finally:
      rerun.kill()  # only if it hung; a no-op once it has exited

  records = read_metrics(workdir)
  train_steps = [r["step"] for r in records if "loss" in r]
  eval_steps = [r["step"] for r in records if "eval/triplet_acc/mean" in r]
  assert train_steps == list(range(1, 31)), train_steps
  assert eval_steps == [15, 30], eval_steps
  expected = train_losses(smoke_run.workdir)
  got = train_losses(workdir)
  np.testing.assert_allclose([got[s] for s in range(1, 31)], [expected[s] for s in range(1, 31)], rtol=0, atol=1e-6)
