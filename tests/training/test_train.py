"""`train_and_evaluate` end to end on the smoke recipe: what it logs, how it fails, its variants."""

import collections
import dataclasses
import math
import re
import shutil
import struct

import numpy as np
import pytest
from flax import nnx

from configs import multilingual
from pe_jax import sharding as sharding_lib
from pe_jax.data import load as data_load
from pe_jax.data.examples import LabeledTexts
from pe_jax.evaluation import suite as suite_lib
from pe_jax.models import pretrained
from pe_jax.tokenization import TextTokenizer
from pe_jax.training import train as train_lib
from pe_jax.training import workdir as workdir_lib
from pe_jax.training.metrics_writer import read_metrics
from pe_jax.training.train import build_tasks, train_and_evaluate


def encoder_weights(workdir, step: int) -> dict[str, np.ndarray]:
  encoder, _, _ = workdir_lib.load_trained_model(str(workdir), step=step)
  return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(encoder))}


def tensorboard_steps(folder) -> dict[str, list[int]]:
  """Scalar tag -> the steps it was written at, from the event files (TFRecord framing: length,
  length crc, payload, payload crc)."""
  from tensorboardX.proto import event_pb2

  steps = collections.defaultdict(list)
  for path in sorted(folder.glob("events.out.tfevents.*")):
    data, i = path.read_bytes(), 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      for value in event.summary.value:
        steps[value.tag].append(event.step)
  return steps


def test_metrics_log_every_step_and_eval_at_eval_every(smoke_run):
  config = smoke_run.config
  records = read_metrics(smoke_run.workdir)
  train = [r for r in records if "loss" in r]
  assert [r["step"] for r in train] == list(range(1, config.total_steps + 1))
  for r in train:
    assert math.isfinite(r["loss"]) and r["loss"] > 0, r
    names = r["task"].split(",")
    assert set(names) <= set(config.tasks) and r["tasks"] and set(r["tasks"]) == set(names), r
    assert all(math.isfinite(r[f"loss/{name}"]) for name in names), r
  assert {n for r in train for n in r["tasks"]} == set(config.tasks)  # every task got trained
  evals = [r for r in records if any(k.startswith("eval/") for k in r)]
  assert [r["step"] for r in evals] == [config.eval_every, config.total_steps]
  expected_keys = {f"eval/{name}/triplet_acc" for name in config.tasks} | {"eval/triplet_acc/mean"}
  assert all(set(r) - {"step"} == expected_keys for r in evals), evals
  assert smoke_run.results == {k.removeprefix("eval/"): v for k, v in evals[-1].items() if k != "step"}
  assert train[-1]["loss"] < train[0]["loss"]
  board = tensorboard_steps(smoke_run.workdir / "tensorboard")
  assert board["loss"] == board["learning_rate"] == list(range(1, config.total_steps + 1))
  assert board["eval/triplet_acc/mean"] == [config.eval_every, config.total_steps]


def test_checkpoints_kept_are_the_latest_and_the_best(smoke_run):
  manager = workdir_lib.checkpoint_manager(smoke_run.workdir, keep=smoke_run.config.keep_checkpoints,
                                           best_metric=smoke_run.config.best_metric)
  evals = {r["step"]: r["eval/triplet_acc/mean"] for r in read_metrics(smoke_run.workdir) if "eval/triplet_acc/mean" in r}
  best = max(evals, key=evals.get)
  assert set(manager.all_steps()) == {20, 30, best}
  assert workdir_lib.best_step(manager, smoke_run.config.best_metric) == best


def test_nan_stops_naming_the_step_and_the_latest_checkpoint(short_config, tmp_path):
  config = short_config(checkpoint_every=1)
  config.optimizer.learning_rate = 1e30  # the first real update (step 2; step 1 warms up from 0) blows up
  with pytest.raises(FloatingPointError) as error:
    train_and_evaluate(config, tmp_path)
  message = str(error.value)
  failed = int(re.search(r"step (\d+): loss \S+, gradient norm \S+ ", message).group(1))
  assert re.search(r"(nan|inf)", message), message
  good = int(re.search(r"latest checkpoint is step (\d+) in ", message).group(1))
  assert re.search(rf"in {re.escape(str(tmp_path / workdir_lib.CHECKPOINTS))}\.", message), message
  assert good == failed - 1
  assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, failed))  # nothing logged for the NaN step
  weights = encoder_weights(tmp_path, good)
  assert all(np.isfinite(w).all() for w in weights.values())


def test_gradient_accumulation_schedule_counts_updates(short_config, tmp_path):
  """grad_accum_steps=2 over 4 micro-steps: 2 updates, the learning rate moving once per update,
  and the weights only after each second micro-step."""
  config = short_config(grad_accum_steps=2, checkpoint_every=1, keep_checkpoints=4)
  config.optimizer.update(dict(warmup_steps=0, learning_rate=1e-3, final_lr_fraction=0.1, decay="cosine"))
  train_and_evaluate(config, tmp_path)
  lr = [r["learning_rate"] for r in read_metrics(tmp_path)]
  # 2 updates, no warm-up: cosine over 2 decay steps from 1e-3, halfway at 1e-3 * (0.1 + 0.9 / 2).
  np.testing.assert_allclose(lr, [1e-3, 1e-3, 5.5e-4, 5.5e-4], rtol=1e-6)
  w = {step: encoder_weights(tmp_path, step) for step in (1, 2, 3, 4)}
  same = lambda s, t: all(np.array_equal(w[s][k], w[t][k]) for k in w[s])
  assert not same(1, 2) and same(2, 3) and not same(3, 4)
  # Step 1 only accumulated: its weights are the initial ones, which step 2's single update (Adam's
  # first step: about lr per weight) moved by at most lr.
  model, _, _ = train_lib.build_model(config, sharding_lib.single_device_mesh(), [(n, {}) for n in sorted(config.tasks)])
  initial = {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model.encoder))}
  assert all(np.array_equal(w[1][k], initial[k]) for k in initial)
  bias = "layers/0/mlp_in/bias"
  step = np.abs(w[2][bias] - w[1][bias]).max()
  np.testing.assert_allclose(step, 1e-3, rtol=0.01)


def test_a_run_that_never_evaluates_builds_no_evaluation_suite(short_config, tmp_path, monkeypatch):
  monkeypatch.setattr(suite_lib, "build_suite", lambda *a, **k: pytest.fail("built the evaluation suite"))
  assert train_and_evaluate(short_config(total_steps=2, eval_every=0), tmp_path) == {}
  assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_bfloat16_compute_trains_with_finite_losses(short_config, tmp_path):
  config = short_config(total_steps=3)
  config.model.encoder.dtype = "bfloat16"
  train_and_evaluate(config, tmp_path)
  losses = [r["loss"] for r in read_metrics(tmp_path)]
  assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
  weights = encoder_weights(tmp_path, 3)
  assert all(w.dtype == np.float32 for w in weights.values())  # bfloat16 compute, float32 weights


def test_the_default_recipe_end_to_end_and_resumed(short_config, tmp_path):
  """The smoke model on the default recipe: every task in every step, balanced supervised contrastive
  blocks, the projection from PCA (saved), distillation against the frozen base. A run stopped at
  step 2 and resumed ends where an uninterrupted one does (the teacher is rebuilt from the saved fit)."""

  def recipe(**changes):
    config = short_config(**changes)
    for task in config.tasks.values():
      task.update(loss="supcon", labels_per_block=4)
    config.mixture.tasks_per_step = 0
    config.model.update(projection_init="pca", pca_fit_posts=60)
    config.distill.update(weight=5.0, teacher="base")
    return config

  whole = tmp_path / "whole"
  train_and_evaluate(recipe(), whole)
  assert (whole / "projection_init.npz").exists()
  records = read_metrics(whole)
  assert all(sorted(r["tasks"]) == sorted(recipe().tasks) for r in records)  # every task, every step
  assert all(math.isfinite(r["loss"]) and r["distill_loss"] >= 0 for r in records)
  assert records[0]["distill_loss"] > 0  # a PCA cut does not have the full-width geometry
  # Died after the step-2 checkpoint: the rerun meets the same teacher and batches.
  split = tmp_path / "split"
  shutil.copytree(whole, split)
  for path in (split / workdir_lib.CHECKPOINTS).iterdir():
    if path.name.isdigit() and int(path.name) > 2:
      shutil.rmtree(path)
  train_and_evaluate(recipe(), split)
  np.testing.assert_allclose([r["loss"] for r in read_metrics(split)], [r["loss"] for r in records], rtol=1e-5)


def test_a_frozen_trunk_ends_the_run_as_it_began(short_config, tmp_path):
  """With `model.frozen_layers=1` the embeddings and the first layer end the run as they began (the
  distillation teacher shares their states), while the layer above trains; a resumed run ends the same."""
  config = short_config()
  for task in config.tasks.values():
    task.update(loss="supcon", labels_per_block=4)
  config.mixture.tasks_per_step = 0
  config.distill.update(weight=5.0, teacher="base")
  config.model.frozen_layers = 1
  train_and_evaluate(config, tmp_path)
  model, _, _ = train_lib.build_model(config, sharding_lib.single_device_mesh(), [])  # as the run began
  start = {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model.encoder))}
  last = encoder_weights(tmp_path, config.total_steps)
  trunk = [k for k in start if k.startswith(("embeddings/", "layers/0/"))]
  assert trunk and all(np.array_equal(start[k], last[k]) for k in trunk)
  assert not np.array_equal(start["layers/1/mlp_in/kernel"], last["layers/1/mlp_in/kernel"])
  # Resumed from the step-2 checkpoint (the frozen group keeps no optimizer state), it ends the same.
  split = tmp_path.parent / f"{tmp_path.name}_split"
  shutil.copytree(tmp_path, split)
  shutil.rmtree(split / workdir_lib.CHECKPOINTS / str(config.total_steps))
  train_and_evaluate(config, split)
  np.testing.assert_allclose([r["loss"] for r in read_metrics(split)], [r["loss"] for r in read_metrics(tmp_path)],
                             rtol=1e-5)


def single_label_data(name: str) -> LabeledTexts:
  """Every example has a label of its own: no positive pair can be formed."""
  return LabeledTexts(name, [f"post {i}" for i in range(6)], np.eye(6, dtype=bool), tuple(f"l{i}" for i in range(6)))


def test_a_task_that_cannot_form_pairs_is_named(base_config, monkeypatch):
  real = data_load.load_split
  monkeypatch.setattr(data_load, "load_split", lambda dataset, split, **kw: (
      single_label_data(f"{dataset}:{split}") if dataset == "tweeteval/irony" else real(dataset, split, **kw)))
  config = base_config()
  for name in config.tasks:
    config.tasks[name].weight = 0.0 if name != "irony" else 1.0
  with pytest.raises(ValueError, match=r"task 'irony' \(tweeteval/irony:train\): .*no positive pair"):
    build_tasks(config)


def test_every_weight_zero_is_refused(base_config):
  config = base_config()
  for name in config.tasks:
    config.tasks[name].weight = 0.0
  with pytest.raises(ValueError, match="every task has weight 0"):
    build_tasks(config)


def test_a_zero_weight_drops_its_task(smoke_config):
  config = smoke_config()
  config.tasks.irony.weight = 0.0
  assert sorted(build_tasks(config)) == sorted(set(config.tasks) - {"irony"})


class StopAtFirstBatch(Exception):
  pass


def test_training_texts_carry_the_models_prefix(short_config, monkeypatch, tmp_path):
  resolve = pretrained.resolve
  monkeypatch.setattr(pretrained, "resolve", lambda *a, **kw: dataclasses.replace(resolve(*a, **kw), prefix="query: "))
  seen = []

  def encode(self, texts):
    seen.extend(texts)
    raise StopAtFirstBatch

  monkeypatch.setattr(TextTokenizer, "encode", encode)
  with pytest.raises(StopAtFirstBatch):
    train_and_evaluate(short_config(), tmp_path)
  assert seen and all(t.startswith("query: ") for t in seen), seen[:3]


@pytest.fixture(scope="module")
def multilingual_smoke(shared_data_dir, tfds_dir):
  """`make()`: configs/multilingual.py:smoke (tiny random model; two sentiment tasks and the translation
  task in English, de, fr and ja) cut to 3 steps, on the staged data."""
  def make():
    config = multilingual.get_config("smoke")
    config.update(dict(data_dir=str(shared_data_dir), tfds_dir=str(tfds_dir), total_steps=3, eval_every=3,
                       checkpoint_every=3))
    config.model.encoder.max_seq_length = 16
    config.eval.num_triplets = 50
    return config
  return make


def test_the_translation_task_trains_end_to_end(multilingual_smoke, tmp_path):
  """Every distillation term and the translation task on a tiny random model: every step trains every
  task, the self-distillation and the hold on the translation blocks are measured, and the task itself is scored only by the zero-shot sets."""
  config = multilingual_smoke()
  results = train_and_evaluate(config, tmp_path)
  records = [r for r in read_metrics(tmp_path) if "loss" in r]
  assert [r["step"] for r in records] == [1, 2, 3]
  for r in records:
    assert sorted(r["tasks"]) == ["sentiment_french", "sentiment_german", "translation"], r
    assert math.isfinite(r["loss"]) and r["self_distill_loss"] > 0 and r["distill_loss"] > 0, r
    assert r["hold_unrelated_loss"] > 0, r
  assert not any(key.startswith("translation/") for key in results)
  assert set(results) == {"sentiment_french/triplet_acc", "sentiment_german/triplet_acc", "triplet_acc/mean"}


def test_translation_languages_and_loss_are_checked_by_key(multilingual_smoke):
  config = multilingual_smoke()
  config.tasks.translation.languages = ("de", "xx", "fr")
  with pytest.raises(ValueError, match=r"^config.tasks.translation.languages: stsb_multi_mt has no file in language "
                                       r"'xx'; its languages: de, en, es"):
    build_tasks(config)
  config.tasks.translation.languages = ("de", "fr")
  config.tasks.translation.pivot = "eng"
  with pytest.raises(ValueError, match=r"^config.tasks.translation.pivot: .* 'eng' \(did you mean 'en'\?\)"):
    build_tasks(config)
  config.tasks.translation.pivot = "en"
  config.tasks.translation.languages = ("de", "en")
  with pytest.raises(ValueError, match=r"languages=\('de', 'en'\): name each language once, and not the pivot 'en'"):
    build_tasks(config)
  config.tasks.translation.languages = ("de", "fr")
  config.tasks.translation.loss = "bce"
  with pytest.raises(ValueError, match=r"^config.tasks.translation.loss='bce': a translation task trains with supcon or "
                                       r"contrastive"):
    build_tasks(config)


def test_a_translation_task_reading_a_zero_shot_split_is_refused():
  config = multilingual.get_config("cpu")
  config.tasks.translation.split = "train+test"
  with pytest.raises(ValueError, match=r"task 'translation' trains on stsb_multi_mt/de:test, but zero-shot 'zs_sts_de'"):
    suite_lib.check_no_leak(config)
