"""Texts -> token ids, and token ids -> fixed-shape batches.

Fixed shapes are what keep a jitted encoder from recompiling. Training and embedding both pack
several texts into each row of a fixed length (`pack_rows`, `packed_arrays`), so shapes do not depend
on the texts' lengths and no compute goes to padding; `pad_batch` is the one-text-a-row layout.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Sequence

import numpy as np
import tokenizers


@dataclasses.dataclass
class TokenStats:
  """What tokenisation did to the input, for the run summary."""

  texts: int = 0
  empty: int = 0  # empty or whitespace-only: still embedded, as sentence-transformers does
  truncated: int = 0
  invalid_unicode: int = 0  # lone surrogates replaced by U+FFFD

  def add(self, other: "TokenStats") -> None:
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def clean_texts(texts: Sequence[object], offset: int = 0) -> tuple[list[str], TokenStats]:
  """Checks types and repairs invalid Unicode; `offset` makes error indices global in a stream."""
  stats = TokenStats(texts=len(texts))
  out = []
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"text at index {offset + i} is {type(text).__name__}, not str: {text!r:.80}")
    try:
      text.encode("utf-8")
    except UnicodeEncodeError:
      text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)  # encode's "replace" gives "?"
      stats.invalid_unicode += 1
    if not text.strip():
      stats.empty += 1
    out.append(text)
  return out, stats


class TextTokenizer:
  """A Hugging Face `tokenizers` tokenizer with the model's truncation length and padding id."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, *, max_length: int, pad_id: int | None = None):
    self.max_length = max_length
    self._tok = tokenizer
    pad = tokenizer.padding["pad_id"] if tokenizer.padding else None  # read before no_padding() clears it
    self._tok.no_padding()
    self._tok.no_truncation()  # truncation is counted and applied here, so the summary can report it
    self.pad_id = pad_id if pad_id is not None else (pad if pad is not None else 0)

  @property
  def backend(self) -> tokenizers.Tokenizer:
    return self._tok

  def encode(self, texts: Sequence[str]) -> tuple[list[np.ndarray], int]:
    """Token ids per text (special tokens included), truncated to max_length; and how many were cut."""
    ids, truncated = [], 0
    for enc in self._tok.encode_batch(list(texts)):
      row = enc.ids
      if len(row) > self.max_length:
        truncated += 1
        # Keep the closing special token ([SEP] / </s>), as Hugging Face truncation does.
        row = row[: self.max_length - 1] + row[-1:]
      ids.append(np.asarray(row, dtype=np.int32))
    return ids, truncated


def pad_batch(rows: Sequence[np.ndarray], length: int, batch_size: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads rows to `length` and the batch to `batch_size` rows (all-padding rows are discarded later)."""
  ids = np.full((batch_size, length), pad_id, dtype=np.int32)
  mask = np.zeros((batch_size, length), dtype=np.int32)
  for r, row in enumerate(rows):
    ids[r, : len(row)] = row
    mask[r, : len(row)] = 1
  return ids, mask


def pack_rows(rows: Sequence[np.ndarray], text_ids: Sequence[int], length: int) -> list[list[int]]:
  """Best-fit-decreasing packing of token rows into rows of `length`: which texts share each row.

  Returns, per packed row, the positions (into `rows`) of the texts it holds, longest first. Each
  text goes to the fullest row it still fits (found by bisection, so a chunk of thousands of texts
  packs in milliseconds, not the seconds a scan over every open row takes).
  """
  order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
  packed: list[list[int]] = []
  open_rows: list[tuple[int, int]] = []  # (free tokens, packed row), sorted
  for i in order:
    n = len(rows[i])
    if n > length:
      raise ValueError(f"text {text_ids[i]} has {n} tokens, more than the packed row length {length}")
    at = bisect.bisect_left(open_rows, (n, -1))
    if at == len(open_rows):
      packed.append([i])
      free, row = length - n, len(packed) - 1
    else:
      free, row = open_rows.pop(at)
      packed[row].append(i)
      free -= n
    if free:
      bisect.insort(open_rows, (free, row))
  return packed


# Packed rows of 128 tokens: attention costs each token its row's length, and on CPU rows of 128 embedded
# tweets 1.5x faster than rows of 256 (texts past it go to rows of the model's truncation length).
ROW_LENGTH = 128

# Posts average 20-40 tokens; pooling room for one text per 4 tokens keeps a packed call's output small,
# and the embedder splits a call of more (very short) texts.
_TOKENS_PER_TEXT = 4


def texts_per_call(num_rows, length):
  """How many texts a call of `num_rows` x `length` packed tokens pools: a static shape, and a
  symbolic one in an exported program (so no max(), only integer arithmetic), at least 1."""
  return -(-(num_rows * length) // _TOKENS_PER_TEXT)


def packed_arrays(rows: Sequence[np.ndarray], text_ids: Sequence[int], packing: list[list[int]], length: int,
                  num_rows: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(ids, segment ids = 1 + text id or 0 for padding, positions) [num_rows, length] for `packing`."""
  ids = np.full((num_rows, length), pad_id, np.int32)
  segments = np.zeros((num_rows, length), np.int32)
  positions = np.zeros((num_rows, length), np.int32)
  for r, members in enumerate(packing):
    start = 0
    for i in members:
      n = len(rows[i])
      ids[r, start : start + n] = rows[i]
      segments[r, start : start + n] = text_ids[i] + 1
      positions[r, start : start + n] = np.arange(n)
      start += n
  return ids, segments, positions
