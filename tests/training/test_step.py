"""The train step's loss: each block of the global batch is scored by its own task's loss and head."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from pe_jax.tokenization import pack_rows, packed_arrays
from pe_jax.models.encoder import l2_normalize
from pe_jax.training import losses
from pe_jax.training.step import TaskLoss, compute_loss, encode_texts, make_train_step, teacher_views

TASKS = (TaskLoss("alpha", "bce", in_batch=False), TaskLoss("bravo", "bce", matryoshka_dims=(4, 8)),
         TaskLoss("charlie", "contrastive", symmetric=True), TaskLoss("delta", "supcon"))
HEADS = [("alpha", {}), ("bravo", {"bias_init": -2.0}), ("charlie", {"projection_dim": 4}), ("delta", {})]
ROWS = 4  # pairs per block
ROW_LENGTH = 16  # packed rows; texts are 2 to 8 tokens


def random_texts(num_blocks: int, seed: int = 0) -> list[np.ndarray]:
  """Token ids of every text of a batch, side-major: text `side * N + r` for the N = blocks * ROWS rows."""
  rng = np.random.default_rng(seed)
  return [rng.integers(5, 50, size=rng.integers(2, 9)).astype(np.int32) for _ in range(3 * num_blocks * ROWS)]


def make_batch(task_ids, texts=None, seed: int = 0, negatives_valid: float = 1.0) -> dict[str, np.ndarray]:
  """A global batch of len(task_ids) blocks, texts packed into rows as BatchBuilder packs them."""
  n = len(task_ids) * ROWS
  texts = random_texts(len(task_ids), seed) if texts is None else texts
  packing = pack_rows(texts, range(3 * n), ROW_LENGTH)
  ids, segments, positions = packed_arrays(texts, range(3 * n), packing, ROW_LENGTH, len(packing), pad_id=0)
  rng = np.random.default_rng(seed)
  m = len(task_ids)
  # Two labels per block: anchors and partners alternate labels 0/1, negatives take the other one.
  labels = np.concatenate([np.arange(ROWS) % 2, np.arange(ROWS) % 2, 1 - np.arange(ROWS) % 2])
  related = np.broadcast_to(labels[:, None] == labels[None, :], (m, 3 * ROWS, 3 * ROWS)).copy()
  valid = np.ones((m, 3 * ROWS), bool)
  if not negatives_valid:
    valid[:, 2 * ROWS:] = False
    related &= valid[:, :, None] & valid[:, None, :]
  return dict(ids=ids, segments=segments, positions=positions, targets=rng.uniform(0, 1, n).astype(np.float32),
              negatives_valid=np.full(n, negatives_valid, np.float32), related=related, valid=valid,
              task_ids=np.asarray(task_ids, np.int32), block_scale=np.full(m, 1 / m, np.float32))


def block(task_ids, s: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Block `s` of `make_batch(task_ids, seed=seed)` as a one-block batch of its own."""
  n = len(task_ids) * ROWS
  texts = random_texts(len(task_ids), seed)
  mine = [texts[side * n + s * ROWS + i] for side in range(3) for i in range(ROWS)]
  full, alone = make_batch(task_ids, seed=seed), make_batch([task_ids[s]], mine)
  rows = slice(s * ROWS, (s + 1) * ROWS)
  return {**alone, **{k: full[k][rows] for k in ("targets", "negatives_valid")},
          **{k: full[k][s:s + 1] for k in ("related", "valid")}, "block_scale": np.ones(1, np.float32)}


def text_blocks(num_blocks: int) -> tuple[np.ndarray, np.ndarray]:
  """Each text's block and its place in that block ([side * ROWS + row]) in a batch of `num_blocks` blocks:
  texts are side-major, text i is row i % ROWS of block (i // ROWS) % num_blocks."""
  i = np.arange(3 * num_blocks * ROWS)
  return (i // ROWS) % num_blocks, (i // (num_blocks * ROWS)) * ROWS + i % ROWS


def unrelated_in_blocks_of(task: int, batch: dict[str, np.ndarray]) -> np.ndarray:
  """bool [3N, 3N]: the pairs inside one block of `task` whose texts its labels call unrelated."""
  blk, place = text_blocks(len(batch["task_ids"]))
  return ((blk[:, None] == blk[None, :]) & (batch["task_ids"][blk] == task)[:, None]
          & ~batch["related"][blk[:, None], place[:, None], place[None, :]])


@pytest.fixture(scope="module")
def model(tiny_model):
  return tiny_model(HEADS)


@pytest.fixture(scope="module")
def loss_fn(model):
  graphdef, _ = model
  return jax.jit(lambda params, batch: per_block(compute_loss(nnx.merge(graphdef, params), batch, TASKS)))


def per_block(loss_aux):
  loss, aux = loss_aux
  return loss, aux["block_loss"]


def with_head_bias(params, task: str, delta: float):
  params = jax.tree.map(lambda x: x, params)  # a copy: nnx.State is mutable
  params["heads"][task]["bias"].set_value(params["heads"][task]["bias"].get_value() + delta)
  return params


def test_each_block_is_its_own_one_block_batch(model, loss_fn):
  """No text of one block touches another block's: not as an in-batch negative, nor through the
  packed rows the blocks share (attention stays inside a text). The total is the blocks' losses
  weighted by their block_scale."""
  _, params = model
  batch = make_batch([2, 0, 2, 1])
  loss, per_shard = loss_fn(params, batch)
  assert per_shard.shape == (4,)
  np.testing.assert_allclose(loss, per_shard.mean(), rtol=1e-6)
  for s in range(4):
    alone, _ = loss_fn(params, block([2, 0, 2, 1], s))
    np.testing.assert_allclose(per_shard[s], alone, rtol=1e-5, err_msg=f"block {s}")


@pytest.mark.parametrize("task", range(len(TASKS)))
def test_a_head_only_moves_the_blocks_of_its_task(model, loss_fn, task):
  _, params = model
  task_ids = np.array([2, 0, 2, 1])
  batch = make_batch(task_ids)
  _, before = loss_fn(params, batch)
  _, after = loss_fn(with_head_bias(params, TASKS[task].name, 3.0), batch)
  changed = np.abs(np.asarray(after) - np.asarray(before)) > 1e-6
  # Contrastive losses are shift-invariant in the bias: that head's bias moves nothing.
  expected = (task_ids == task) & (TASKS[task].kind == "bce")  # in-batch BCE pairs use it too
  np.testing.assert_array_equal(changed, expected)


def test_a_head_projection_only_moves_the_blocks_of_its_task(model, loss_fn):
  _, params = model
  task_ids = np.array([2, 0, 2, 1])
  batch = make_batch(task_ids)
  _, before = loss_fn(params, batch)
  moved = jax.tree.map(lambda x: x, params)
  kernel = moved["heads"]["charlie"]["projection"]["kernel"]
  kernel.set_value(kernel.get_value() * np.array([3.0, 1.0, 1.0, 1.0], np.float32))  # not a rotation
  _, after = loss_fn(moved, batch)
  np.testing.assert_array_equal(np.abs(np.asarray(after) - np.asarray(before)) > 1e-6, task_ids == 2)


def test_bce_counts_negatives_only_where_valid(model, loss_fn):
  _, params = model
  task_ids = [0, 1, 3, 0]
  texts = random_texts(len(task_ids))
  n = len(task_ids) * ROWS
  other_negatives = texts[:2 * n] + texts[2 * n:][::-1]
  for valid, should_move in ((0.0, False), (1.0, True)):
    _, a = loss_fn(params, make_batch(task_ids, texts, negatives_valid=valid))
    _, b = loss_fn(params, make_batch(task_ids, other_negatives, negatives_valid=valid))
    assert (np.abs(np.asarray(a) - np.asarray(b)) > 1e-6).all() == should_move, f"negatives_valid={valid}"


def test_distillation_across_blocks_holds_only_pairs_from_different_blocks(model):
  """`distill_pairs="across_blocks"` leaves the pairs inside a block to the task's labels: one block
  has no such pair; with three, exactly the cross-block pairs count (texts are side-major)."""
  graphdef, params = model
  student = nnx.merge(graphdef, params)
  teacher = nnx.merge(*tiny_teacher(model)).encoder
  distill = lambda batch, pairs: float(compute_loss(student, batch, TASKS[:1], teacher=teacher, distill_weight=1.0,
                                                    distill_pairs=pairs)[1]["distill_loss"])
  one = make_batch([0])
  assert distill(one, "all") > 0
  assert distill(one, "across_blocks") == 0
  batch = make_batch([0, 0, 0])
  block_of, _ = text_blocks(3)
  expected = losses.relational_distillation_loss(encode_texts(student.encoder, batch), teacher_views(teacher, batch)[0]["base"],
                                                 np.ones(3 * 3 * ROWS, bool), block_of[:, None] != block_of[None, :])
  np.testing.assert_allclose(distill(batch, "across_blocks"), expected, rtol=1e-5)
  assert not np.isclose(distill(batch, "across_blocks"), distill(batch, "all"))


@pytest.mark.parametrize("shards", [1, 2])
def test_a_row_stride_distils_the_texts_of_every_kth_packed_row_of_each_shard(model, shards):
  """`distill_row_stride` k: the teacher embeds rows 0, k, 2k, ... of each shard's rows, its views of
  those rows' texts are the ones it gives when it embeds every row, and the term holds exactly the
  pairs among those texts."""
  graphdef, params = model
  student = nnx.merge(graphdef, params)
  teacher = nnx.merge(*tiny_teacher(model)).encoder
  batch = make_batch([0, 0, 0, 0])
  rows = batch["segments"].shape[0] - batch["segments"].shape[0] % (2 * shards)  # whole shards, k = 2
  batch = {**batch, **{k: batch[k][:rows] for k in ("ids", "segments", "positions")}}
  held = batch["segments"].reshape(shards, -1, ROW_LENGTH)[:, ::2]
  expected_seen = np.zeros(3 * 4 * ROWS, bool)
  expected_seen[np.unique(held[held > 0]) - 1] = True
  in_rows = np.zeros(3 * 4 * ROWS, bool)
  in_rows[np.unique(batch["segments"][batch["segments"] > 0]) - 1] = True
  assert 0 < expected_seen.sum() < in_rows.sum()  # a strict, non-empty share of the batch's texts

  views, seen = teacher_views(teacher, batch, row_stride=2, shards=shards)
  every, _ = teacher_views(teacher, batch)
  np.testing.assert_array_equal(seen, expected_seen)
  np.testing.assert_allclose(views["base"][expected_seen], every["base"][expected_seen], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(views["base"][~expected_seen], 0.0)
  distill = float(compute_loss(student, batch, TASKS[:1], teacher=teacher, distill_weight=1.0,
                               distill_row_stride=2, shards=shards)[1]["distill_loss"])
  expected = losses.relational_distillation_loss(encode_texts(student.encoder, batch), every["base"], expected_seen)
  np.testing.assert_allclose(distill, expected, rtol=1e-5)


def test_a_row_stride_with_self_distillation_is_refused(model):
  graphdef, params = model
  student = nnx.merge(graphdef, params)
  with pytest.raises(ValueError, match=r"self-distillation needs the teacher's view of every anchor"):
    compute_loss(student, make_batch([0]), (TaskLoss("alpha", "supcon", self_distill=1.0),), teacher=student.encoder,
                 distill_row_stride=2)


def tiny_teacher(model):
  """Another random model of the same shape: a teacher whose geometry differs from the student's."""
  graphdef, params = model
  rng = np.random.default_rng(9)
  return graphdef, jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.5, size=x.shape), x.dtype), params)


def test_unknown_loss_names_the_task():
  with pytest.raises(ValueError, match=r"task 'emotion': loss 'hinge' is not one of"):
    TaskLoss("emotion", "hinge")


def test_train_step_updates_params_and_reports_its_schedule(model):
  graphdef, params = model
  tasks = TASKS[:2]  # fewer heads in the program: it compiles in a third of the time
  batch = make_batch([0, 1, 1, 0])
  expected_loss, expected_per_shard = jax.jit(
      lambda p, b: per_block(compute_loss(nnx.merge(graphdef, p), b, tasks)))(params, batch)
  schedule = optax.linear_schedule(1e-2, 0.0, 10)
  tx = optax.adam(schedule)
  step = make_train_step(graphdef, tx, tasks, schedule)
  params = jax.tree.map(jnp.copy, params)  # the step donates its state; the fixture's stays intact
  state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params)}
  losses = []
  for i in range(4):
    state, metrics = step(state, batch)
    if i == 0:
      np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-6)
      np.testing.assert_allclose(metrics["block_loss"], expected_per_shard, rtol=1e-6)
      assert float(metrics["grad_norm"]) > 0
    np.testing.assert_allclose(metrics["learning_rate"], schedule(i), rtol=1e-6)
    losses.append(float(metrics["loss"]))
  assert int(state["step"]) == 4
  assert losses[-1] < losses[0], losses  # the same batch four times: it must be learnt


def test_self_distillation_pulls_each_text_of_its_blocks_towards_the_teachers_anchor(model):
  """With the student as its own "init" teacher, side a is at its target and the term is the mean, over
  the blocks of its task, of the other texts' squared distance to their row's anchor."""
  graphdef, params = model
  tasks = TASKS[:3] + (TaskLoss("delta", "supcon", self_distill=2.0, self_distill_teacher="init"),)
  task_ids = np.array([3, 0, 3, 1])
  batch = make_batch(task_ids)
  student = nnx.merge(graphdef, params)
  emb = np.asarray(encode_texts(student.encoder, batch), np.float64).reshape(3, 4, ROWS, -1)
  per_block = [np.mean(np.sum((emb[:, j] - emb[0, j]) ** 2, -1)) for j in np.flatnonzero(task_ids == 3)]
  loss_of = jax.jit(lambda p, b, t: compute_loss(nnx.merge(graphdef, p), b, t, teacher=nnx.merge(graphdef, p).encoder),
                    static_argnums=2)
  loss, aux = loss_of(params, batch, tasks)
  plain, plain_aux = loss_of(params, batch, TASKS)
  np.testing.assert_allclose(aux["self_distill_loss"], np.mean(per_block), rtol=1e-5)
  np.testing.assert_allclose(loss - plain, 2.0 * np.mean(per_block), rtol=1e-5)
  assert float(plain_aux["self_distill_loss"]) == 0.0
  # A missing third text does not count, however far it sits.
  np.testing.assert_allclose(loss_of(params, make_batch(task_ids, negatives_valid=0.0), tasks)[1]["self_distill_loss"],
                             np.mean([np.mean(np.sum((emb[:2, j] - emb[0, j]) ** 2, -1)) for j in (0, 2)]), rtol=1e-5)


def test_hold_unrelated_holds_the_pairs_inside_its_tasks_blocks_that_the_labels_call_unrelated(model):
  """A task's `hold_unrelated` is a relational distillation over the pairs inside its own blocks whose texts
  share no label (here the blocks of delta, task 3): not the related pairs, not other tasks' blocks, not
  pairs across blocks; measured in `hold_unrelated_loss` and added to the loss at its weight."""
  graphdef, params = model
  student = nnx.merge(graphdef, params)
  teacher = nnx.merge(*tiny_teacher(model)).encoder
  tasks = TASKS[:3] + (TaskLoss("delta", "supcon", hold_unrelated=3.0),)
  task_ids = np.array([3, 0, 3, 1])
  batch = make_batch(task_ids)
  loss_of = lambda b, t: compute_loss(student, b, t, teacher=teacher)
  loss, aux = loss_of(batch, tasks)
  plain, plain_aux = loss_of(batch, TASKS)
  held = unrelated_in_blocks_of(3, batch)
  assert held.sum() == 2 * (3 * ROWS) ** 2 // 2  # two labels in equal numbers: half of each delta block's pairs
  expected = losses.relational_distillation_loss(encode_texts(student.encoder, batch), teacher_views(teacher, batch)[0]["base"],
                                                 np.ones(len(held), bool), held)
  np.testing.assert_allclose(aux["hold_unrelated_loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(loss - plain, 3.0 * expected, rtol=1e-5)
  assert float(plain_aux["hold_unrelated_loss"]) == 0.0
  # Blocks whose texts are all related hold nothing.
  everything_related = {**batch, "related": np.ones_like(batch["related"])}
  assert float(loss_of(everything_related, tasks)[1]["hold_unrelated_loss"]) == 0.0


def test_one_gap_matrix_gives_the_gradient_of_each_distillation_term_computed_alone(model):
  """compute_loss builds the cosine gaps to the teacher once and averages them for the relational term and
  every hold; its gradient must be that of the task losses plus each term computed on its own."""
  graphdef, params = model
  teacher = nnx.merge(*tiny_teacher(model)).encoder
  tasks = TASKS[:3] + (TaskLoss("delta", "supcon", hold_unrelated=3.0),)
  task_ids = np.array([3, 0, 3, 1])
  batch = make_batch(task_ids)
  blk, _ = text_blocks(len(task_ids))
  across, held = blk[:, None] != blk[None, :], unrelated_in_blocks_of(3, batch)
  target = teacher_views(teacher, batch)[0]["base"]
  everything = np.ones(len(blk), bool)

  def shared(p):
    return compute_loss(nnx.merge(graphdef, p), batch, tasks, teacher=teacher, distill_weight=2.0,
                        distill_pairs="across_blocks")[0]

  def alone(p):
    student = nnx.merge(graphdef, p)
    emb = encode_texts(student.encoder, batch)
    return (compute_loss(student, batch, TASKS)[0]
            + 2.0 * losses.relational_distillation_loss(emb, target, everything, across)
            + 3.0 * losses.relational_distillation_loss(emb, target, everything, held))

  (loss, grads), (expected_loss, expected) = jax.value_and_grad(shared)(params), jax.value_and_grad(alone)(params)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))


def test_teacher_views_are_the_full_width_and_the_projected_embedding(model):
  graphdef, params = model
  encoder = nnx.merge(graphdef, params).encoder
  batch = make_batch([0, 1])
  views, seen = teacher_views(encoder, batch)
  n = 3 * 2 * ROWS
  assert seen.all()
  pooled = encoder.pool_packed(batch["ids"], batch["segments"], batch["positions"], num_texts=n)
  np.testing.assert_allclose(views["init"], encode_texts(encoder, batch), rtol=1e-6)
  np.testing.assert_allclose(views["base"], l2_normalize(pooled), rtol=1e-6)
  assert views["base"].shape == (n, encoder.cfg.hidden_size) and views["init"].shape == (n, encoder.cfg.embedding_dim)


def test_distillation_without_a_teacher_is_refused(model):
  graphdef, params = model
  with pytest.raises(ValueError, match="distillation needs the frozen teacher"):
    compute_loss(nnx.merge(graphdef, params), make_batch([0]), (TaskLoss("alpha", "supcon", self_distill=1.0),))
  with pytest.raises(ValueError, match="task 'alpha': self-distillation teacher 'full' is not one of"):
    TaskLoss("alpha", "supcon", self_distill_teacher="full")


@pytest.mark.parametrize("frozen_layers", [1, 2])
def test_a_frozen_trunk_changes_no_number_and_no_gradient_above_it(model, frozen_layers):
  """The trunk's states computed once and shared with the teacher give the loss that the student and
  teacher computing their own give, as long as the two trunks are equal (the optimizer keeps them so);
  every gradient above the trunk is unchanged and the trunk's is zero: it takes no backward pass."""
  from pe_jax.training.optimizer import param_group

  graphdef, params = model
  _, other = tiny_teacher(model)
  in_trunk = lambda path: param_group(path, frozen_layers) == "frozen"
  teacher_params = jax.tree_util.tree_map_with_path(lambda p, mine, theirs: mine if in_trunk(p) else theirs,
                                                    params, other)
  teacher = nnx.merge(graphdef, teacher_params).encoder
  batch = make_batch([0, 3, 3])
  tasks = (TASKS[0], TaskLoss("delta", "supcon", self_distill=1.0, self_distill_teacher="init"))
  loss_of = jax.jit(jax.value_and_grad(
      lambda p, k: compute_loss(nnx.merge(graphdef, p), batch, tasks, teacher=teacher, distill_weight=2.0,
                                frozen_layers=k)[0]), static_argnums=1)
  (shared, shared_grads), (own, own_grads) = loss_of(params, frozen_layers), loss_of(params, 0)
  np.testing.assert_allclose(shared, own, rtol=1e-5)
  frozen = 0
  for (path, g_shared), (_, g_own) in zip(nnx.to_flat_state(shared_grads), nnx.to_flat_state(own_grads)):
    if in_trunk(path):
      frozen += 1
      assert not np.asarray(g_shared.get_value()).any(), path
    else:
      np.testing.assert_allclose(g_shared.get_value(), g_own.get_value(), rtol=1e-4, atol=1e-7, err_msg=str(path))
  assert frozen > 0
