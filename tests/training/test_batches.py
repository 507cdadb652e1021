"""BatchBuilder: (step) -> the global batch, blocks of rows of one task each, shard by shard.

Synthetic tasks whose every text names its task and its label ("alpha red 7", the `labeling_task`
fixture), so a decoded row says where it came from.
"""

import jax
import numpy as np
import pytest

from pe_jax import sharding as sharding_lib
from pe_jax.data.examples import TextPairs
from pe_jax.tasks.pairs import ScoredPairs
from pe_jax.tokenization import TextTokenizer
from pe_jax.training.batches import BatchBuilder, blocks_per_shard, shard_task_names

LABELING = ("alpha", "bravo", "charlie", "delta")
ROWS = 8


def pairs_task(name: str, n: int = 30) -> ScoredPairs:
  return ScoredPairs(TextPairs(name, [f"{name} query {i}" for i in range(n)], [f"{name} answer {i}" for i in range(n)],
                               (np.arange(n) % 2).astype(np.float32)))


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer) -> TextTokenizer:
  return minilm_tokenizer


def make_builder(tokenizer, mesh, tasks, *, per_shard: bool = True, seed: int = 0, tasks_per_step: int = 1,
                 weights=None) -> BatchBuilder:
  tasks = {t.name: t for t in tasks}
  return BatchBuilder(tasks, weights or {name: 1 / len(tasks) for name in tasks}, tokenizer, mesh=mesh,
                      batch_size_per_shard=ROWS, seed=seed, per_shard_tasks=per_shard, tasks_per_step=tasks_per_step)


def texts(tokenizer, batch, side: str) -> list[str]:
  """Side "a", "b" or "n" of the global batch, one string per row of `targets`, decoded from the
  packed rows: text `side * N + r` (N rows in all) is the tokens whose segment id is that + 1."""
  ids, segments = np.asarray(batch["ids"]).ravel(), np.asarray(batch["segments"]).ravel()
  n = len(batch["targets"])
  first = "abn".index(side) * n
  return [tokenizer.backend.decode(ids[segments == first + r + 1].tolist(), skip_special_tokens=True)
          for r in range(n)]


def host(batch) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in batch.items()}


def test_a_step_always_builds_the_same_batch(tokenizer, labeling_task):
  mesh = sharding_lib.single_device_mesh()
  tasks = [labeling_task(n) for n in LABELING]
  plan, batch = make_builder(tokenizer, mesh, tasks).build(5)
  again_plan, again = make_builder(tokenizer, mesh, tasks).build(5)  # a fresh builder: a resumed run
  np.testing.assert_array_equal(plan.task_ids, again_plan.task_ids)
  for key, value in host(batch).items():
    np.testing.assert_array_equal(value, np.asarray(again[key]), err_msg=key)
  later = [texts(tokenizer, make_builder(tokenizer, mesh, tasks).build(s)[1], "a") for s in range(6, 9)]
  assert texts(tokenizer, batch, "a") not in later


def test_labeling_block_rows_and_related_texts(tokenizer, labeling_task):
  mesh = sharding_lib.single_device_mesh()
  builder = make_builder(tokenizer, mesh, [labeling_task(n) for n in LABELING])
  for step in range(3):
    plan, batch = builder.build(step)
    (task,) = shard_task_names(builder.order, plan.task_ids)
    np.testing.assert_array_equal(np.asarray(batch["task_ids"]), plan.task_ids)
    a, b, n = (texts(tokenizer, batch, side) for side in "abn")
    assert all(t.split()[0] == task for t in a + b + n), (task, a + b + n)
    color = lambda t: t.split()[1]
    assert [color(x) for x in a] == [color(x) for x in b]  # positives share the anchor's label
    assert all(color(x) != color(y) for x, y in zip(a, n))  # negatives share none
    hb = host(batch)
    expected = np.array([[color(x) == color(y) for y in a + b + n] for x in a + b + n])
    np.testing.assert_array_equal(hb["related"], expected[None])
    assert hb["valid"].all()
    np.testing.assert_allclose(hb["block_scale"], [1.0])  # one block a step: its loss is the step's
    np.testing.assert_array_equal(hb["targets"], np.ones(ROWS))
    np.testing.assert_array_equal(hb["negatives_valid"], np.ones(ROWS))


def test_pairs_block_without_negatives(tokenizer):
  mesh = sharding_lib.single_device_mesh()
  task = pairs_task("echo")
  plan, batch = make_builder(tokenizer, mesh, [task]).build(0)
  hb = host(batch)
  a, b = texts(tokenizer, batch, "a"), texts(tokenizer, batch, "b")
  assert [x.replace("query", "answer") for x in a] == b
  np.testing.assert_array_equal(hb["targets"], [int(x.split()[-1]) % 2 for x in a])
  np.testing.assert_array_equal(hb["negatives_valid"], np.zeros(ROWS))
  np.testing.assert_array_equal(hb["valid"][0], np.arange(3 * ROWS) < 2 * ROWS)  # no negatives
  pair = np.zeros((3 * ROWS, 3 * ROWS), bool)
  pair[:2 * ROWS, :2 * ROWS] = np.tile(np.eye(ROWS, dtype=bool), (2, 2))  # a_i ~ b_i, and each to itself
  np.testing.assert_array_equal(hb["related"][0], pair)


def test_texts_are_packed_whole_into_rows_of_the_model_length(tokenizer, labeling_task):
  mesh = sharding_lib.single_device_mesh()
  builder = make_builder(tokenizer, mesh, [labeling_task(n) for n in LABELING])
  for step in range(3):
    hb = host(builder.build(step)[1])
    ids, segments, positions = hb["ids"], hb["segments"], hb["positions"]
    assert ids.shape == segments.shape == positions.shape
    assert ids.shape[1] == tokenizer.max_length and ids.shape[0] % builder.rows_multiple == 0
    assert (ids[segments == 0] == tokenizer.pad_id).all()
    texts_here = [t for t in np.unique(segments) if t]
    assert texts_here == list(range(1, 3 * ROWS + 1))  # every text of every side, once
    for t in texts_here:
      rows, cols = np.nonzero(segments == t)
      assert len(set(rows)) == 1 and (np.diff(cols) == 1).all(), f"text {t} is split"
      np.testing.assert_array_equal(positions[rows, cols], np.arange(len(cols)))  # positions restart per text
    assert ids.shape[0] < 3 * ROWS  # packing shares rows: fewer rows than texts


@pytest.mark.cpu_devices(4)
def test_per_shard_tasks_give_each_shard_its_own_task(tokenizer, labeling_task):
  """The paper's per-device scheme on 4 shards and 4 equally weighted tasks: every step, each
  shard's block comes whole from a different task, and it lives on that shard's device."""
  mesh = sharding_lib.make_mesh({"data": 4}, jax.devices()[:4])
  builder = make_builder(tokenizer, mesh, [labeling_task(n) for n in LABELING])
  assert builder.num_shards == 4
  for step in range(4):
    plan, batch = builder.build(step)
    np.testing.assert_array_equal(np.sort(plan.task_ids), np.arange(4))
    np.testing.assert_array_equal(np.asarray(batch["task_ids"]), plan.task_ids)
    names = shard_task_names(builder.order, plan.task_ids)
    for side in "abn":
      rows = texts(tokenizer, batch, side)
      for s, name in enumerate(names):
        block = rows[s * ROWS:(s + 1) * ROWS]
        assert all(t.split()[0] == name for t in block), (step, side, s, name, block)
    # Each shard's texts are packed into rows held by that shard's device only.
    for shard in batch["segments"].addressable_shards:
      s = mesh.devices.flatten().tolist().index(shard.device)
      text_ids = np.unique(np.asarray(shard.data))
      text_ids = text_ids[text_ids > 0] - 1
      assert len(text_ids) == 3 * ROWS and ((text_ids % (4 * ROWS)) // ROWS == s).all(), (s, text_ids)


@pytest.mark.cpu_devices(4)
def test_one_task_per_step_when_not_per_shard(tokenizer, labeling_task):
  mesh = sharding_lib.make_mesh({"data": 4}, jax.devices()[:4])
  builder = make_builder(tokenizer, mesh, [labeling_task(n) for n in LABELING], per_shard=False)
  drawn = set()
  for step in range(6):
    plan, batch = builder.build(step)
    assert len(set(plan.task_ids.tolist())) == 1
    name = builder.order[plan.task_ids[0]]
    assert all(t.split()[0] == name for t in texts(tokenizer, batch, "a"))
    drawn.add(name)
  assert len(drawn) > 1


def test_every_task_in_every_step(tokenizer, labeling_task):
  """tasks_per_step=0: one block per task each step, whole from its task, and each block's loss scaled
  by its task's mixture weight (every task is in every step, so sampling cannot weight them)."""
  mesh = sharding_lib.single_device_mesh()
  weights = {"alpha": 0.1, "bravo": 0.2, "charlie": 0.3, "delta": 0.4}
  builder = make_builder(tokenizer, mesh, [labeling_task(n) for n in LABELING], tasks_per_step=0, weights=weights)
  assert builder.blocks_per_shard == builder.num_blocks == 4
  for step in range(3):
    plan, batch = builder.build(step)
    names = shard_task_names(builder.order, plan.task_ids)
    assert sorted(names) == list(LABELING)
    hb = host(batch)
    np.testing.assert_allclose(hb["block_scale"], [weights[n] for n in names], rtol=1e-6)
    assert hb["related"].shape == (4, 3 * ROWS, 3 * ROWS) and hb["valid"].all()
    for side in "abn":
      rows = texts(tokenizer, batch, side)
      for j, name in enumerate(names):
        assert all(t.split()[0] == name for t in rows[j * ROWS:(j + 1) * ROWS]), (step, side, j, name)


def test_blocks_per_shard():
  assert blocks_per_shard(0, num_tasks=12, num_shards=1) == 12
  assert blocks_per_shard(0, num_tasks=12, num_shards=8) == 2  # every task at least once a step
  assert blocks_per_shard(1, num_tasks=12, num_shards=8) == 1  # the paper: one task per device
  assert blocks_per_shard(3, num_tasks=12, num_shards=1) == 3
  with pytest.raises(ValueError, match="tasks_per_step must be >= 0"):
    blocks_per_shard(-1, num_tasks=3, num_shards=1)


@pytest.mark.cpu_devices(2)
def test_every_task_in_every_step_on_two_shards(tokenizer, labeling_task):
  """Four tasks on two shards: two blocks per shard, the step still holds every task once, and each
  shard's packed rows hold exactly its own two blocks' texts."""
  mesh = sharding_lib.make_mesh({"data": 2}, jax.devices()[:2])
  builder = make_builder(tokenizer, mesh, [labeling_task(n) for n in LABELING], tasks_per_step=0)
  assert (builder.blocks_per_shard, builder.num_blocks) == (2, 4)
  plan, batch = builder.build(1)
  assert sorted(shard_task_names(builder.order, plan.task_ids)) == list(LABELING)
  for shard in batch["segments"].addressable_shards:
    s = mesh.devices.flatten().tolist().index(shard.device)
    text_ids = np.unique(np.asarray(shard.data))
    text_ids = text_ids[text_ids > 0] - 1
    assert len(text_ids) == 2 * 3 * ROWS and ((text_ids % (4 * ROWS)) // ROWS // 2 == s).all(), (s, text_ids)
