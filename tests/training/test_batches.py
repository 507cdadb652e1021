"""BatchBuilder: (step) -> the global batch, one block of rows per data-parallel shard.

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
from pe_jax.training.batches import BatchBuilder, shard_task_names

LABELING = ("alpha", "bravo", "charlie", "delta")
ROWS = 8


def pairs_task(name: str, n: int = 30) -> ScoredPairs:
  return ScoredPairs(TextPairs(name, [f"{name} query {i}" for i in range(n)], [f"{name} answer {i}" for i in range(n)],
                               (np.arange(n) % 2).astype(np.float32)))


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer) -> TextTokenizer:
  return minilm_tokenizer


def make_builder(tokenizer, mesh, tasks, *, per_shard: bool = True, seed: int = 0) -> BatchBuilder:
  tasks = {t.name: t for t in tasks}
  return BatchBuilder(tasks, {name: 1 / len(tasks) for name in tasks}, tokenizer, mesh=mesh,
                      batch_size_per_shard=ROWS, seed=seed, per_shard_tasks=per_shard)


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


def test_labeling_block_rows_and_same_label_columns(tokenizer, labeling_task):
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
    expected = np.array([[color(x) == color(y) for y in b + n] for x in a])
    np.testing.assert_array_equal(hb["same_label"], expected)
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
  assert hb["same_label"][:, ROWS:].all()  # no negative columns to compete with
  np.testing.assert_array_equal(hb["same_label"][:, :ROWS], np.eye(ROWS, dtype=bool))


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
