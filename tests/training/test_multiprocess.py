"""Two processes joined by jax.distributed (localhost, CPU collectives over gloo) train like one.

Both runs have 4 devices and so 4 data-parallel shards: the same task schedule and global batch,
built in the 2-process run half by each process from its own shards. They differ only in where the
devices live, hence losses equal up to float32 reduction order.
"""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from pe_jax.training import workdir as workdir_lib
from pe_jax.training.metrics_writer import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = 4
TIMEOUT_S = 300


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def train_cli(workdir, tfds_dir, data_dir, log, *, devices: int, process: tuple[int, int, int] | None = None):
  """The smoke recipe cut to 4 steps (checkpoints at 2 and 4, an evaluation at 4) on `devices` CPU
  devices; `process` = (port, num_processes, process_id) joins a multi-process job."""
  flags = [] if process is None else [f"--coordinator_address=127.0.0.1:{process[0]}",
                                      f"--num_processes={process[1]}", f"--process_id={process[2]}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PE_JAX_DATA_DIR": str(data_dir),
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  return subprocess.Popen(
      [sys.executable, "-m", "pe_jax.train", "--config", "configs/multitask.py:smoke", "--workdir", str(workdir),
       f"--config.tfds_dir={tfds_dir}", f"--config.total_steps={STEPS}", f"--config.eval_every={STEPS}",
       "--config.checkpoint_every=2", "--config.model.encoder.max_seq_length=16", *flags],
      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs, logs):
  try:
    codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
  except subprocess.TimeoutExpired:
    pytest.fail("a process hung; each one's last lines:\n" + "\n---\n".join(
        pathlib.Path(log).read_text()[-2000:] for log in logs))
  finally:
    for p in procs:
      p.kill()  # only one that hung; a no-op once it has exited
  for code, log in zip(codes, logs):
    assert code == 0, pathlib.Path(log).read_text()[-4000:]


def encoder_params(workdir) -> dict[str, np.ndarray]:
  encoder, _, _ = workdir_lib.load_trained_model(str(workdir), step=STEPS)  # one process, one device
  return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(encoder))}


@pytest.mark.slow
def test_two_processes_train_like_one_and_their_checkpoint_restores_in_one(shared_data_dir, tfds_dir, tmp_path):
  one, two = tmp_path / "one_process", tmp_path / "two_processes"
  logs = [tmp_path / name for name in ("one.log", "two_0.log", "two_1.log")]
  with open(logs[0], "w") as log:  # first alone: it prepares the datasets the pair then reads
    wait_all([train_cli(one, tfds_dir, shared_data_dir, log, devices=4)], logs[:1])
  port = free_port()
  with open(logs[1], "w") as log0, open(logs[2], "w") as log1:
    wait_all([train_cli(two, tfds_dir, shared_data_dir, log, devices=2, process=(port, 2, i))
              for i, log in enumerate((log0, log1))], logs[1:])

  a, b = read_metrics(one), read_metrics(two)
  train_a, train_b = [r for r in a if "loss" in r], [r for r in b if "loss" in r]
  assert [r["step"] for r in b] == [r["step"] for r in a] == [1, 2, 3, 4, 4]  # process 0 alone wrote
  assert [r["tasks"] for r in train_b] == [r["tasks"] for r in train_a]  # one schedule across processes
  assert len({tuple(r["tasks"]) for r in train_a}) > 1
  for key in ("loss", "grad_norm", "loss/emotion", "loss/irony", "loss/stance_climate"):
    np.testing.assert_allclose([r.get(key, 0.0) for r in train_b], [r.get(key, 0.0) for r in train_a],
                               rtol=1e-5, err_msg=key)
  assert train_a[-1]["loss"] < train_a[0]["loss"]  # the weights moved, so later steps compare updates too
  np.testing.assert_allclose(b[-1]["eval/triplet_acc/mean"], a[-1]["eval/triplet_acc/mean"], atol=0.02)

  assert sorted(p.name for p in (two / workdir_lib.CHECKPOINTS).iterdir() if p.name.isdigit()) == ["2", "4"]
  restored, reference = encoder_params(two), encoder_params(one)
  assert restored.keys() == reference.keys()
  for path, value in restored.items():
    np.testing.assert_allclose(value, reference[path], rtol=1e-4, atol=1e-6, err_msg=path)
