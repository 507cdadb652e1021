"""A training workdir: its config guard, its checkpoints, and what serving reads back from it."""

import json
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pe_jax import sharding as sharding_lib
from pe_jax.serving.embedder import Embedder
from pe_jax.training import workdir as workdir_lib
from pe_jax.training.metrics_writer import read_metrics
from pe_jax.training.optimizer import learning_rate_schedule
from pe_jax.training.train import train_and_evaluate

POSTS = ["Hiring a data engineer in Berlin, remote ok!", "", "We just shipped our new release 🎉",
         "climate action now #climate", "so ironic that the meeting about meetings ran late"]


@pytest.fixture
def smoke_copy(smoke_run, tmp_path):
  """A private copy of the finished smoke workdir, for tests that write to it."""
  return shutil.copytree(smoke_run.workdir, tmp_path / "workdir")


def test_a_fresh_workdir_gets_the_config(base_config, tmp_path):
  config = base_config()
  workdir_lib.check_or_write_config(tmp_path / "new", config)
  assert json.loads((tmp_path / "new" / workdir_lib.CONFIG_FILE).read_text()) == workdir_lib.config_to_dict(config)


def test_an_incompatible_config_is_refused_naming_what_differs(base_config, tmp_path):
  workdir_lib.check_or_write_config(tmp_path, base_config())
  written = (tmp_path / workdir_lib.CONFIG_FILE).read_text()
  config = base_config()
  config.batch_size = 16
  config.tasks.irony.dataset = "tweeteval/hate"
  del config.tasks["emotion"]
  with pytest.raises(ValueError) as error:
    workdir_lib.check_or_write_config(tmp_path, config)
  message = str(error.value)
  assert str(tmp_path) in message
  assert "batch_size: workdir has 8, this run has 16" in message
  assert "tasks.irony.dataset: workdir has 'tweeteval/irony', this run has 'tweeteval/hate'" in message
  assert "tasks.emotion.weight: workdir has 1.0, this run has '<absent>'" in message
  assert "total_steps" not in message
  assert (tmp_path / workdir_lib.CONFIG_FILE).read_text() == written


def test_changes_that_keep_the_run_are_accepted(base_config, tmp_path):
  workdir_lib.check_or_write_config(tmp_path, base_config())
  config = base_config()
  config.update(dict(total_steps=60, log_every=5, checkpoint_every=20, eval_every=30, keep_checkpoints=3,
                     data_dir="/elsewhere", tfds_dir="/elsewhere/tfds"))
  config.eval.num_triplets = 50
  config.mesh.update(dict(data=2, fsdp=2, tensor=2))
  workdir_lib.check_or_write_config(tmp_path, config)
  assert json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())["total_steps"] == 60


def test_training_refuses_an_incompatible_workdir_before_any_work(smoke_run, smoke_copy):
  before = sorted(p.relative_to(smoke_copy) for p in smoke_copy.rglob("*"))
  metrics = read_metrics(smoke_copy)
  config = smoke_run.config.copy_and_resolve_references()
  config.optimizer.learning_rate = 0.1
  with pytest.raises(ValueError, match=r"optimizer\.learning_rate: workdir has 0\.001, this run has 0\.1"):
    train_and_evaluate(config, smoke_copy)
  assert sorted(p.relative_to(smoke_copy) for p in smoke_copy.rglob("*")) == before
  assert read_metrics(smoke_copy) == metrics


def test_a_compatible_change_resumes_and_trains_on(smoke_run, smoke_copy):
  """Longer, logging every other step, explicitly on one device: resumes from step 30."""
  config = smoke_run.config.copy_and_resolve_references()
  config.update(dict(total_steps=32, log_every=2))
  config.mesh.update(dict(data=1))
  results = train_and_evaluate(config, smoke_copy)
  records = read_metrics(smoke_copy)
  assert [r["step"] for r in records if "loss" in r] == list(range(1, 31)) + [32]
  assert [r["step"] for r in records if "eval/triplet_acc/mean" in r] == [15, 30, 32]
  assert results["triplet_acc/mean"] == records[-1]["eval/triplet_acc/mean"]
  # total_steps reshaped the decay: step 32 ran at the new schedule's step-31 rate.
  np.testing.assert_allclose(records[-2]["learning_rate"], learning_rate_schedule(config)(31), rtol=1e-6)
  assert 32 in ocp.CheckpointManager(smoke_copy / workdir_lib.CHECKPOINTS).all_steps()


def test_embed_cli_on_a_workdir_matches_the_embedder(smoke_run, tmp_path):
  posts = tmp_path / "posts.txt"
  posts.write_text("\n".join(POSTS) + "\n")
  out = tmp_path / "out.npy"
  proc = subprocess.run([sys.executable, "-m", "pe_jax.embed", "--model", str(smoke_run.workdir), "--input",
                         str(posts), "--output", str(out)], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  vectors = np.load(out)
  dim = smoke_run.config.model.encoder.projection_dim
  assert vectors.shape == (len(POSTS), dim) and vectors.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
  expected = Embedder.from_pretrained(str(smoke_run.workdir))(POSTS)
  np.testing.assert_allclose(vectors, expected, atol=1e-6)
  assert len({tuple(np.round(v, 4)) for v in vectors}) == len(POSTS)  # a trained model, not a constant


def test_best_checkpoint_is_chosen_by_the_configs_best_metric(smoke_run, smoke_copy):
  """A later, worse checkpoint (step 40, planted here) is the latest; best=True still picks step 30."""
  metric = smoke_run.config.best_metric
  manager = workdir_lib.checkpoint_manager(smoke_copy, keep=smoke_run.config.keep_checkpoints, best_metric=metric)
  assert manager.metrics(30)[metric] == smoke_run.results[metric]
  encoder_config, head_specs, _ = workdir_lib.read_model_description(smoke_copy)
  _, target = workdir_lib.abstract_model(encoder_config, head_specs, sharding_lib.single_device_mesh())
  params = manager.restore(30, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
  worse = jax.tree.map(lambda x: x + 1.0, params)
  manager.save(40, args=ocp.args.Composite(params=ocp.args.StandardSave(worse)),
               metrics={metric: manager.metrics(30)[metric] - 0.1})
  manager.wait_until_finished()
  manager.close()

  def first_weights(**kwargs):
    encoder, _, _ = workdir_lib.load_trained_model(str(smoke_copy), **kwargs)
    return np.asarray(encoder.embeddings.word.embedding.get_value()[:5])

  at = {step: first_weights(step=step) for step in (30, 40)}
  assert not np.array_equal(at[30], at[40])
  np.testing.assert_array_equal(first_weights(), at[40])
  np.testing.assert_array_equal(first_weights(best=True), at[30])


def test_a_workdir_without_checkpoints_says_so(smoke_run, tmp_path):
  workdir = tmp_path / "no_checkpoints"
  workdir.mkdir()
  for name in (workdir_lib.CONFIG_FILE, workdir_lib.MODEL_FILE, workdir_lib.TOKENIZER_FILE):
    shutil.copy(smoke_run.workdir / name, workdir)
  for load in (lambda: workdir_lib.load_trained_model(str(workdir)), lambda: Embedder.from_pretrained(str(workdir))):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{workdir / workdir_lib.CHECKPOINTS}: no checkpoint found")):
      load()
  assert not (workdir / workdir_lib.CHECKPOINTS).exists()  # reading must not create it
  with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 7; have \[20, 30\]"):
    workdir_lib.load_trained_model(str(smoke_run.workdir), step=7)
