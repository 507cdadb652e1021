"""Text cleaning, truncation that keeps the closing token, padding and packing."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import tiny_tokenizer
from pe_jax.tokenization import TextTokenizer, TokenStats, clean_texts, pack_rows, pad_batch


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


def test_pad_batch():
  ids, mask = pad_batch([np.array([5, 6, 7]), np.array([9])], 4, 3, pad_id=1)
  np.testing.assert_array_equal(ids, [[5, 6, 7, 1], [9, 1, 1, 1], [1, 1, 1, 1]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  assert ids.dtype == mask.dtype == np.int32


def test_pack_rows_puts_each_text_once_into_rows_that_fit():
  rng = np.random.default_rng(0)
  rows = [np.zeros(n, np.int32) for n in rng.integers(0, 17, size=500)]
  packing = pack_rows(rows, range(500), 16)
  assert sorted(i for row in packing for i in row) == list(range(500))
  assert all(sum(len(rows[i]) for i in row) <= 16 for row in packing)


def test_pack_rows_takes_the_fullest_row_that_fits():
  rows = [np.zeros(n, np.int32) for n in (6, 5, 4, 3)]
  assert pack_rows(rows, range(4), 10) == [[0, 2], [1, 3]]  # 3 goes beside 5 (room 5), not beside 6+4


def test_pack_rows_names_a_text_longer_than_a_row():
  with pytest.raises(ValueError, match="text 7 has 9 tokens, more than the packed row length 8"):
    pack_rows([np.zeros(9, np.int32)], [7], 8)
