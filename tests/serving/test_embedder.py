"""The jitted embedder on the tiny BERT: input order, packing, streaming, no recompilation, odd inputs and their counts."""

from __future__ import annotations

import logging
import random

import jax
import numpy as np
import pytest

from fixtures import HIDDEN, numpy_embed, run_encoder, tiny_tensors
from pe_jax.models import weights
from pe_jax.models.loading import load_model
from pe_jax.serving.embedder import Embedder, RowShape, cut_calls

WORDS = "the a of and to is in it hello world post job team data model great news today we are hiring".split()


def random_texts(n: int, seed: int = 0) -> list[str]:
  """Texts of every token length from 2 ([CLS][SEP]) past the 24-token limit, in random order."""
  rng = random.Random(seed)
  return [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def embedder(tiny_bert_dir) -> Embedder:
  """One warmed-up embedder for the module. Rows of 16 tokens, below the 24-token limit, so texts of
  17-24 tokens take the second (long-row) shape."""
  model, tokenizer, _ = load_model(str(tiny_bert_dir))
  embedder = Embedder(model, tokenizer, batch_size=8, row_length=16)
  embedder.warmup()
  return embedder


def reference(embedder: Embedder, texts: list[str]) -> np.ndarray:
  ids, _ = embedder.tokenizer.encode(texts)
  return np.stack([numpy_embed(tiny_tensors("bert"), list(r)) for r in ids])


def test_rows_follow_input_order(embedder):
  texts = random_texts(40)
  assert len({len(t.split()) for t in texts}) > 15  # lengths really are shuffled
  got = embedder(texts)
  assert got.shape == (40, HIDDEN) and got.dtype == np.float32
  np.testing.assert_allclose(got, reference(embedder, texts), rtol=1e-4, atol=2e-5)


def test_a_generator_streams_in_chunks_with_the_same_result(embedder, monkeypatch):
  texts = random_texts(1000, seed=1)
  whole = embedder(texts)
  monkeypatch.setattr(embedder, "chunk_size", 64)
  chunks = list(embedder.embed_stream(t for t in texts))
  assert [len(c) for c in chunks] == [64] * 15 + [40]
  np.testing.assert_allclose(np.concatenate(chunks), whole, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(embedder(iter(texts)), whole, rtol=1e-5, atol=1e-6)
  assert embedder.stats.texts == 1000  # embed() counts the whole stream, not its last chunk


def test_at_most_two_shapes_and_nothing_compiles_after_warmup(embedder, caplog):
  assert embedder.shapes == [RowShape(rows=8, length=16), RowShape(rows=5, length=24)]
  assert embedder.num_traces == 2  # warm-up traced each shape once
  with jax.log_compiles(), caplog.at_level(logging.DEBUG):
    embedder(random_texts(300, seed=2) + ["", "x" * 200, "post"])
  assert embedder.num_traces == 2
  compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
  assert not compiled, compiled


def test_rows_as_long_as_the_limit_give_one_shape(tiny_bert_dir):
  model, tokenizer, _ = load_model(str(tiny_bert_dir))
  assert Embedder(model, tokenizer, batch_size=4).shapes == [RowShape(rows=4, length=24)]
  assert Embedder(model, tokenizer).shapes == [RowShape(rows=8, length=24)]  # 8 rows unless told


def test_a_call_of_more_short_texts_than_it_pools_is_split(tiny_bert_dir):
  model, tokenizer, _ = load_model(str(tiny_bert_dir))
  embedder = Embedder(model, tokenizer, batch_size=1, row_length=16)  # pools 4 texts a call; a row holds 8
  texts = ["", "post", "hello world", " "] * 10 + random_texts(30, seed=3)
  np.testing.assert_allclose(embedder(texts), reference(embedder, texts), rtol=1e-4, atol=2e-5)


def test_cut_calls_bounds_rows_and_texts():
  shape = RowShape(rows=2, length=8)  # pools 4 texts a call
  assert cut_calls([[0, 1], [2], [3, 4], [5, 6, 7, 8, 9, 10]], shape) == [
      [[[0, 1], [2]]], [[[3, 4]]], [[[5, 6, 7, 8]]], [[[9, 10]]]]


def test_cut_calls_gives_each_shard_its_own_block():
  shape = RowShape(rows=4, length=8)  # 2 shards: blocks of 2 rows pooling 4 texts each
  assert cut_calls([[0, 1], [2], [3, 4], [5, 6, 7, 8, 9, 10], [11]], shape, shards=2) == [
      [[[0, 1], [2]], [[3, 4]]], [[[5, 6, 7, 8]], [[9, 10], [11]]]]


def test_empty_and_whitespace_texts_are_embedded_and_counted(embedder):
  texts = ["", "   ", "hello", "\t\n"]
  got = embedder(texts)
  assert embedder.stats.empty == 3 and embedder.stats.texts == 4
  np.testing.assert_allclose(got, reference(embedder, texts), rtol=1e-4, atol=2e-5)
  np.testing.assert_allclose(got[0], got[1], atol=1e-6)  # both are [CLS] [SEP]


def test_over_long_text_is_truncated_keeping_sep(embedder):
  long = " ".join(WORDS * 3)  # 60 words
  ids = embedder.tokenizer.backend.encode(long).ids
  assert len(ids) > 24
  got = embedder(["hello", long])
  assert embedder.stats.truncated == 1
  want = numpy_embed(tiny_tensors("bert"), ids[:23] + [3])
  np.testing.assert_allclose(got[1], want, rtol=1e-4, atol=2e-5)


def test_non_str_raises_type_error_with_its_global_index(embedder, monkeypatch):
  with pytest.raises(TypeError, match=r"text at index 2 is int, not str"):
    embedder(["a", "b", 3])
  monkeypatch.setattr(embedder, "chunk_size", 4)
  with pytest.raises(TypeError, match=r"text at index 9 is NoneType, not str"):
    embedder(iter(["ok"] * 9 + [None]))


def test_lone_surrogate_is_embedded_and_counted(embedder):
  got = embedder(["hello \ud800 world", "hello \ufffd world"])
  assert embedder.stats.invalid_unicode == 1
  np.testing.assert_allclose(got[0], got[1], atol=1e-6)


def test_zero_texts(embedder):
  for texts in ([], iter([])):
    out = embedder(texts)
    assert out.shape == (0, HIDDEN) and out.dtype == np.float32
  assert embedder.stats.texts == 0


def test_prefix_is_put_in_front_of_every_text(embedder, monkeypatch):
  plain = embedder(["the hello", "the world"])
  monkeypatch.setattr(embedder, "prefix", "the ")
  np.testing.assert_allclose(embedder(["hello", "world"]), plain, atol=1e-6)


def test_update_model_swaps_weights_without_recompiling(embedder, tiny_bert_dir):
  traces = embedder.num_traces
  before = embedder(["hello world"])
  other = weights.load_encoder(embedder.config, tiny_tensors("bert", seed=1))
  original = weights.load_encoder(embedder.config, tiny_tensors("bert"))
  embedder.update_model(other)
  try:
    after = embedder(["hello world"])
    np.testing.assert_allclose(after[0], numpy_embed(tiny_tensors("bert", seed=1), [2, 13, 14, 3]), atol=2e-5)
  finally:
    embedder.update_model(original)
  assert not np.allclose(before, after) and embedder.num_traces == traces


def test_from_pretrained_passes_overrides(tiny_bert_dir):
  embedder = Embedder.from_pretrained(str(tiny_bert_dir), batch_size=4, config_overrides={"projection_dim": 8})
  assert (embedder.dim, embedder.batch_size, embedder.prefix, embedder.tokenizer.max_length) == (8, 4, "", 24)


@pytest.mark.slow
def test_packed_equals_one_text_a_row_on_real_weights(shared_data_dir):
  """minilm-l6 on real posts of every length, some past the 128-token rows (the long shape) and one past
  the 256-token limit: packed rows against the encoder run on one text a row, padding masked."""
  posts = []
  for task in ("emoji", "emotion", "hate", "irony", "offensive", "sentiment"):
    lines = (shared_data_dir / "tweeteval" / task / "test_text.txt").read_text(encoding="utf-8").splitlines()
    posts += lines[::50]
  rng = random.Random(0)
  posts += [" ".join(rng.sample(posts, k)) for k in (4, 5, 6, 8, 30)] + ["", " "]
  model, tokenizer, _ = load_model("minilm-l6")
  embedder = Embedder(model, tokenizer)
  packed = embedder(posts)
  ids, _ = tokenizer.encode(posts)
  assert max(map(len, ids)) == 256 and sum(len(r) > 128 for r in ids) >= 3 and embedder.num_traces == 2
  # 32 texts a call of one shape: a text's own row, padding masked, is the unpacked path.
  one_a_row = np.concatenate([run_encoder(model, ids[i : i + 32], length=256, rows=32)[: len(ids[i : i + 32])]
                              for i in range(0, len(ids), 32)])
  cosine = (packed * one_a_row).sum(1)
  assert cosine.min() >= 0.99999, (int(np.argmin(cosine)), cosine.min())
