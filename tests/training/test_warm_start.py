"""Where a run starts: the PCA projection (fitted, saved, reused), data-placed BCE biases, the checks."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from configs import multilingual, multitask
from configs.ablation import posts
from pe_jax import sharding as sharding_lib
from pe_jax.evaluation import metrics as metrics_lib
from pe_jax.models import weights
from pe_jax.models.loading import load_model
from pe_jax.models.encoder import EncoderConfig
from pe_jax.models.post_model import PostEmbeddingModel
from pe_jax.serving.embedder import Embedder
from pe_jax.tasks.pairs import sample_posts, sample_posts_by_task
from pe_jax.training import warm_start
from pe_jax.training.train import build_tasks, train_and_evaluate


@pytest.fixture(scope="module")
def model_and_tasks(minilm_tokenizer, labeling_task):
  cfg = EncoderConfig(vocab_size=minilm_tokenizer.backend.get_vocab_size(), hidden_size=16, num_layers=1,
                      num_heads=2, intermediate_size=32, max_seq_length=32, projection_dim=4)
  encoder = weights.random_encoder(cfg, seed=1)
  with sharding_lib.activate(sharding_lib.single_device_mesh()):
    model = PostEmbeddingModel(encoder, [("alpha", {}), ("bravo", {})], rngs=nnx.Rngs(0))
  tasks = {n: labeling_task(n) for n in ("alpha", "bravo")}
  return model, tasks


def pca_config(base_config, posts: int = 40):
  config = base_config()
  config.model.pca_fit_posts = posts
  config.model.encoder.projection_dim = 4  # the test model's
  return config


def test_pca_projection_starts_at_the_pca_of_the_pooled_base(model_and_tasks, minilm_tokenizer, base_config, tmp_path):
  model, tasks = model_and_tasks
  config = pca_config(base_config)
  pooled = Embedder(model.encoder.without_projection(normalize=False), minilm_tokenizer)
  warm_start.fit_projection(config, model, pooled, tasks, tmp_path)
  fit = metrics_lib.pca_reduce(pooled(sample_posts(tasks, 40, config.seed)), 4, normalize=False)
  posts = ["alpha red 1", "bravo blue 7", "something else entirely"]
  expected = (pooled(posts) - fit.mean) @ fit.components.T
  expected /= np.linalg.norm(expected, axis=1, keepdims=True)
  np.testing.assert_allclose(Embedder(model.encoder, minilm_tokenizer)(posts), expected, atol=1e-5)
  assert (tmp_path / warm_start.PROJECTION_INIT_FILE).exists()


def test_a_task_centred_fit_centres_each_tasks_posts_on_their_own_mean(model_and_tasks, minilm_tokenizer, base_config,
                                                                       tmp_path):
  model, tasks = model_and_tasks
  config = pca_config(base_config)
  config.model.pca_center = "task"
  pooled = Embedder(model.encoder.without_projection(normalize=False), minilm_tokenizer)
  warm_start.fit_projection(config, model, pooled, tasks, tmp_path)
  by_task = sample_posts_by_task(tasks, 40, config.seed)
  groups = np.repeat(np.arange(len(by_task)), [len(p) for p in by_task.values()])
  fit = metrics_lib.pca_reduce(pooled(sample_posts(tasks, 40, config.seed)), 4, normalize=False, groups=groups)
  saved = np.load(tmp_path / warm_start.PROJECTION_INIT_FILE)
  np.testing.assert_allclose(saved["kernel"], fit.components.T, atol=1e-5)


def test_a_saved_fit_is_reused_without_embedding(model_and_tasks, minilm_tokenizer, base_config, tmp_path):
  """A resumed run rebuilds its starting point (the distillation teacher) from the saved fit."""
  model, tasks = model_and_tasks
  config = pca_config(base_config)
  warm_start.fit_projection(config, model, Embedder(model.encoder.without_projection(normalize=False), minilm_tokenizer), tasks, tmp_path)
  kernel = np.asarray(model.encoder.projection.kernel[...]).copy()
  model.encoder.projection.kernel[...] = 0 * model.encoder.projection.kernel[...]

  def no_embedding(texts):
    raise AssertionError("refitted although a fit was saved")

  warm_start.fit_projection(config, model, no_embedding, tasks, tmp_path)
  np.testing.assert_array_equal(np.asarray(model.encoder.projection.kernel[...]), kernel)


def test_bce_bias_sits_between_positive_and_negative_cosines(model_and_tasks, minilm_tokenizer, base_config):
  model, tasks = model_and_tasks
  config = base_config()
  config.tasks = {"alpha": dict(bias_from_data=True), "bravo": dict(bias_from_data=False)}
  embedder = Embedder(model.encoder, minilm_tokenizer)
  before = float(model.heads["bravo"].bias[...])
  biases = warm_start.set_head_biases(config, model, embedder, tasks)
  assert list(biases) == ["alpha"] and float(model.heads["bravo"].bias[...]) == before
  a, b, n = tasks["alpha"].texts_for(tasks["alpha"].batch(config.seed, 0, 30))
  ea, eb, en = embedder(a), embedder(b), embedder(n)
  middle = (np.mean(np.sum(ea * eb, 1)) + np.mean(np.sum(ea * en, 1))) / 2
  scale = float(model.heads["alpha"].scale())
  np.testing.assert_allclose(float(model.heads["alpha"].bias[...]), -scale * middle, rtol=1e-4)


@pytest.mark.parametrize("changes, match", [
    (dict(projection_init="orthogonal"), r"config.model.projection_init='orthogonal'; known: random, pca"),
    (dict(projection_init="pca", pca_fit_posts=10), r"config.model.pca_fit_posts=10 must exceed the projection dimension 16"),
    (dict(pca_center="language"), r"config.model.pca_center='language'; known: global, task"),
])
def test_bad_warm_start_settings_are_named(base_config, changes, match):
  config = base_config()
  config.model.update(changes)
  with pytest.raises(ValueError, match=match):
    warm_start.check_config(config)


def test_distillation_needs_a_teacher(base_config):
  config = base_config()
  config.distill.weight = 1.0
  config.distill.teacher = ""
  with pytest.raises(ValueError, match=r"config.distill.weight=1.0 needs a teacher: set config.distill.teacher to 'base'"):
    warm_start.check_config(config)


@pytest.mark.parametrize("stride, self_distill, match", [
    (0, 0.0, r"config.distill.row_stride must be an integer >= 1 .* got 0"),
    (3, 1.0, r"config.tasks.emotion.self_distill needs the teacher's view of every anchor, but "
             r"config.distill.row_stride=3 embeds one packed row in 3: set row_stride=1"),
])
def test_a_bad_distillation_row_stride_is_named(base_config, stride, self_distill, match):
  config = base_config()
  config.distill.row_stride = stride
  config.tasks.emotion.self_distill = dict(weight=self_distill)
  with pytest.raises(ValueError, match=match):
    warm_start.check_config(config)


@pytest.mark.parametrize("hold, teacher, match", [
    (-1.0, "base", r"config.tasks.emotion.hold_unrelated must be >= 0, got -1.0"),
    (2.0, "full", r"config.tasks.emotion.hold_unrelated=2.0 holds pairs to config.distill.teacher, which is 'full': "
                  r"set it to 'base' or 'init'"),
])
def test_a_bad_hold_on_unrelated_pairs_is_named(base_config, hold, teacher, match):
  config = base_config()
  config.distill.update(dict(weight=0.0, teacher=teacher))
  config.tasks.emotion.hold_unrelated = hold
  with pytest.raises(ValueError, match=match):
    warm_start.check_config(config)


def test_a_hold_on_unrelated_pairs_alone_needs_the_teacher(base_config):
  config = base_config()
  config.distill.weight = 0.0
  assert not warm_start.needs_teacher(config)
  config.tasks.emotion.hold_unrelated = 2.0
  assert warm_start.needs_teacher(config)
  config.tasks.emotion.weight = 0.0  # a task that does not train holds nothing
  assert not warm_start.needs_teacher(config)


def test_the_multilingual_recipe_holds_its_translation_blocks_twice_as_hard_as_across_blocks():
  config = multilingual.get_config("cpu")
  assert config.tasks.translation.hold_unrelated == 2 * config.distill.weight == 40
  assert multilingual.get_config("cpu,no_hold").tasks.translation.hold_unrelated == 0
  assert not any(spec.get("hold_unrelated") for name, spec in config.tasks.items() if name != "translation")


def test_distill_weight_per_task_holds_every_task_equally_hard(base_config):
  config = base_config()
  config.distill.update(dict(weight=150.0, weight_per="task"))
  # A step's task losses sum to about one task's: 3 blocks -> each task weighs 1/3, distillation 50.
  assert [warm_start.distill_weight(config, n) for n in (1, 3, 12)] == [150.0, 50.0, 12.5]
  config.distill.weight_per = "step"
  assert [warm_start.distill_weight(config, n) for n in (1, 3, 12)] == [150.0, 150.0, 150.0]
  # The recipe holds the step at 20; the ablation counts per task so its all-tasks run gets the same.
  assert warm_start.distill_weight(multitask.get_config("demo"), 3) == 20.0
  ablation = posts.get_config("demo")
  assert warm_start.distill_weight(ablation, 3) == 20.0 and warm_start.distill_weight(ablation, 1) == 60.0
  config.distill.weight_per = "pair"
  with pytest.raises(ValueError, match=r"config.distill.weight_per='pair'; known: task, step"):
    warm_start.check_config(config)


def test_block_smaller_than_twice_its_labels_is_refused_before_training(smoke_config, tmp_path):
  config = smoke_config()
  config.batch_size = 4
  config.tasks.emotion.labels_per_block = 6
  with pytest.raises(ValueError, match=r"tasks.emotion.labels_per_block=6 needs config.batch_size >= it"):
    build_tasks(config)
  with pytest.raises(ValueError, match=r"tasks.emotion.labels_per_block=6"):
    train_and_evaluate(config, tmp_path / "run")


def test_distillation_across_blocks_with_one_block_per_step_is_refused_before_training(smoke_config, tmp_path):
  """One trained task on one device: no pair across blocks, so the distillation would silently hold
  nothing. The run stops before it writes anything."""
  config = smoke_config()
  for name in list(config.tasks)[1:]:
    config.tasks[name].weight = 0.0
  config.mixture.tasks_per_step = 0
  config.distill.update(weight=1.0, teacher="base", pairs="across_blocks")
  with pytest.raises(ValueError, match=r"config.distill.pairs='across_blocks' holds no pair when a step has one "
                                       r"task block .* set config.distill.pairs='all'"):
    train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
  config.distill.pairs = "sideways"
  with pytest.raises(ValueError, match=r"config.distill.pairs='sideways'; known: all, across_blocks"):
    warm_start.check_config(config)


def test_a_self_distillation_teacher_of_another_width_is_named():
  config = multilingual.get_config("smoke")
  config.tasks.translation.self_distill.teacher = "base"
  student = EncoderConfig(vocab_size=10, hidden_size=32, num_heads=4, projection_dim=16)
  with pytest.raises(ValueError, match=r"^config.tasks.translation.self_distill.teacher='base' embeds at 32-d \(the base "
                                       r"at full width\) but the student embeds at 16-d"):
    warm_start.check_teacher(config, student)
  warm_start.check_teacher(config, student.replace(projection_dim=None))  # a full-width student: it fits
  config.tasks.translation.self_distill.teacher = "init"
  warm_start.check_teacher(config, student)
  config.tasks.translation.self_distill.teacher = "full"
  with pytest.raises(ValueError, match=r"config.tasks.translation.self_distill.teacher='full': set it to 'init'"):
    warm_start.check_config(config)


def test_the_teacher_is_needed_by_either_distillation():
  config = multilingual.get_config("smoke")
  assert warm_start.needs_teacher(config)
  config.distill.weight = 0.0
  assert warm_start.needs_teacher(config)  # the translation task's self-distillation still needs it
  config.tasks.translation.weight = 0.0
  assert not warm_start.needs_teacher(config)


def test_start_weights_are_the_base_with_the_runs_fitted_projection(tiny_bert_dir, tmp_path):
  trained, _, _ = load_model(str(tiny_bert_dir), projection_dim=4)
  moved = [(k, nnx.Param(v.get_value() + 0.5)) for k, v in nnx.to_flat_state(nnx.state(trained))]
  trained = nnx.merge(nnx.graphdef(trained), nnx.from_flat_state(moved))  # as if training had moved every weight
  rng = np.random.default_rng(0)
  kernel, bias = rng.normal(size=(32, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
  np.savez(tmp_path / warm_start.PROJECTION_INIT_FILE, kernel=kernel, bias=bias)
  start = warm_start.start_weights(trained, tmp_path, str(tiny_bert_dir))
  base = dict(nnx.to_flat_state(nnx.state(load_model(str(tiny_bert_dir))[0])))
  assert set(start) == {k for k, _ in moved}
  for path, value in start.items():
    expected = {"kernel": kernel, "bias": bias}[path[-1]] if path[0] == "projection" else base[path].get_value()
    np.testing.assert_array_equal(np.asarray(value), expected, err_msg=str(path))
