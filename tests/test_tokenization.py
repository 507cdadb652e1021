"""Text cleaning, truncation that keeps the closing token, length buckets and padding."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import tiny_tokenizer
from pe_jax.tokenization import TextTokenizer, TokenStats, bucket_length, clean_texts, pad_batch


def test_clean_texts_counts_and_repairs():
  texts, stats = clean_texts(["ok", "", "  \t\n", "bad \ud800 half", "fine"])
  assert stats == TokenStats(texts=5, empty=2, truncated=0, invalid_unicode=1)
  assert texts[3] == "bad \ufffd half"  # U+FFFD, as TokenStats documents; "?" would be a real token
  texts[3].encode("utf-8")
  assert texts[:3] + texts[4:] == ["ok", "", "  \t\n", "fine"]


def test_clean_texts_type_error_names_the_global_index():
  with pytest.raises(TypeError, match=r"text at index 1002 is NoneType, not str"):
    clean_texts(["a", "b", None], offset=1000)
  with pytest.raises(TypeError, match=r"text at index 0 is bytes, not str: b'x"):
    clean_texts([b"x" * 500])


def test_stats_add():
  total = TokenStats(texts=2, empty=1)
  total.add(TokenStats(texts=3, truncated=2, invalid_unicode=1))
  assert total == TokenStats(texts=5, empty=1, truncated=2, invalid_unicode=1)


def test_truncation_keeps_the_closing_token_and_is_counted():
  tok = TextTokenizer(tiny_tokenizer("bert"), max_length=8)
  # "hello world" -> [CLS] hello world [SEP] (4); "abcdef" -> [CLS] a ##b ... ##f [SEP] (8, fits exactly).
  ids, truncated = tok.encode(["hello world", "abcdef", "abcdefghij", ""])
  assert [len(r) for r in ids] == [4, 8, 8, 2] and truncated == 1
  full = tiny_tokenizer("bert").encode("abcdefghij").ids
  assert ids[2].tolist() == full[:7] + [3] and ids[2].dtype == np.int32
  assert ids[1].tolist() == tiny_tokenizer("bert").encode("abcdef").ids


def test_tokenizer_padding_and_truncation_settings_are_ignored():
  backend = tiny_tokenizer("xlmr")
  backend.enable_padding(pad_id=1, length=64)
  backend.enable_truncation(max_length=4)
  tok = TextTokenizer(backend, max_length=16)
  assert tok.pad_id == 1  # taken from the backend's padding before it is switched off
  ids, truncated = tok.encode(["hello world we are hiring"])
  assert len(ids[0]) == 7 and truncated == 0
  assert TextTokenizer(tiny_tokenizer("xlmr"), max_length=16).pad_id == 0
  assert TextTokenizer(tiny_tokenizer("xlmr"), max_length=16, pad_id=1).pad_id == 1


@pytest.mark.parametrize("n, want", [(0, 8), (1, 8), (8, 8), (9, 16), (250, 250), (256, 250)])
def test_bucket_length(n, want):
  assert bucket_length(n, 8, 250) == want


def test_pad_batch():
  ids, mask = pad_batch([np.array([5, 6, 7]), np.array([9])], 4, 3, pad_id=1)
  np.testing.assert_array_equal(ids, [[5, 6, 7, 1], [9, 1, 1, 1], [1, 1, 1, 1]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  assert ids.dtype == mask.dtype == np.int32
