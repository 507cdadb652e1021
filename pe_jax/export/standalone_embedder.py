"""Embeds texts with a model exported by `pe_jax.export` (StableHLO or ONNX), without pe_jax's model code.

This file is copied into each exported folder as `load_embedder.py`. It imports numpy and tokenizers,
and jax (StableHLO) or onnxruntime (ONNX) only when that format is loaded.

  import load_embedder
  embed = load_embedder.load("OUT")
  vectors = embed(["a post", "another post"])        # [N, D] float32, rows in input order

  python OUT/load_embedder.py --input posts.txt --output posts.npy

Texts get the model's prefix and are cut to its token limit keeping the closing special token. For the
StableHLO program they are then packed several to a row of `row_length` tokens (longer ones into rows
of the token limit), a fixed row count a call, so the compiled program sees at most two shapes; for
ONNX they are sorted by length and padded to a multiple of 8 tokens and a fixed row count.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Callable, Sequence

import numpy as np
import tokenizers

SETTINGS_FILE = "embedder.json"
TOKENIZER_FILE = "tokenizer.json"
LOADER_FILE = "load_embedder.py"


def _stablehlo_runner(folder: pathlib.Path, settings: dict) -> Callable[..., np.ndarray]:
  """(ids, segment ids, positions) of packed rows -> [ceil(rows * length / 4), D]."""
  import jax
  from jax import export

  exported = export.deserialize(bytearray((folder / settings["program"]).read_bytes()))
  with np.load(folder / settings["weights"]) as archive:
    params = jax.device_put({name: archive[name] for name in archive.files})
  call = jax.jit(exported.call)
  return lambda *packed: np.asarray(call(params, *packed))


def _onnx_runner(folder: pathlib.Path, settings: dict) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  import onnxruntime

  session = onnxruntime.InferenceSession(str(folder / settings["program"]), providers=["CPUExecutionProvider"])
  output = session.get_outputs()[0].name
  return lambda ids, mask: session.run(
      [output], {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)})[0]


RUNNERS = {"stablehlo": _stablehlo_runner, "onnx": _onnx_runner}


def _without_lone_surrogates(text: str) -> str:
  """Lone surrogates cannot be encoded; pe_jax replaces them by U+FFFD, and so does this (only texts
  that fail to encode pay for the character walk)."""
  try:
    text.encode("utf-8")
    return text
  except UnicodeEncodeError:
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)

class ExportedEmbedder:
  """texts -> L2-normalised embeddings [N, D] (float32), in input order."""

  def __init__(self, folder: str | pathlib.Path, *, batch_size: int = 32):
    folder = pathlib.Path(folder)
    self.settings = json.loads((folder / SETTINGS_FILE).read_text())
    self.prefix = self.settings["prefix"]
    self.max_length = self.settings["max_seq_length"]
    self.pad_id = self.settings["pad_token_id"]
    self.length_multiple = self.settings["length_multiple"]
    self.row_length = self.settings["row_length"]
    self.dim = self.settings["embedding_dim"]
    self.batch_size = batch_size
    self.tokenizer = tokenizers.Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    self.tokenizer.no_padding()
    self.tokenizer.no_truncation()
    self._run = RUNNERS[self.settings["format"]](folder, self.settings)

  def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"text at index {i} is {type(text).__name__}, not str")
    texts = [self.prefix + _without_lone_surrogates(t) for t in texts]
    rows = [e.ids for e in self.tokenizer.encode_batch(texts)]
    return [r if len(r) <= self.max_length else r[: self.max_length - 1] + r[-1:] for r in rows]

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    rows = self.token_ids(list(texts))
    return self._packed(rows) if self.settings["format"] == "stablehlo" else self._padded(rows)

  def _packed(self, rows: list[list[int]]) -> np.ndarray:
    """Texts in length order fill rows one after another (next fit: texts of a length share rows), a
    call holding `batch_size` rows of `row_length` tokens, or as many tokens in rows of the token limit."""
    out = np.zeros((len(rows), self.dim), np.float32)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for long in (False, True):
      texts = [i for i in order if (len(rows[i]) > self.row_length) == long]
      length = self.max_length if long else self.row_length
      num_rows = max(1, self.batch_size * self.row_length // length)
      most = -(-(num_rows * length) // 4)  # the program pools this many texts a call
      while texts:
        arrays = np.full((num_rows, length), self.pad_id, np.int32), *np.zeros((2, num_rows, length), np.int32)
        ids, segments, positions = arrays
        row, column, taken = 0, 0, 0
        while taken < min(len(texts), most):
          n = len(rows[texts[taken]])
          if column + n > length:
            row, column = row + 1, 0
            if row == num_rows:
              break
          ids[row, column : column + n] = rows[texts[taken]]
          segments[row, column : column + n] = taken + 1
          positions[row, column : column + n] = np.arange(n)
          column, taken = column + n, taken + 1
        out[texts[:taken]] = self._run(ids, segments, positions)[:taken]
        texts = texts[taken:]
    return out

  def _padded(self, rows: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(rows), self.dim), np.float32)
    order = np.argsort([len(r) for r in rows], kind="stable")
    for start in range(0, len(order), self.batch_size):
      chunk = order[start : start + self.batch_size]
      longest = max(len(rows[r]) for r in chunk)
      length = min(self.max_length, -(-longest // self.length_multiple) * self.length_multiple)
      ids = np.full((self.batch_size, length), self.pad_id, np.int64)
      mask = np.zeros((self.batch_size, length), np.int64)
      for i, r in enumerate(chunk):
        ids[i, : len(rows[r])] = rows[r]
        mask[i, : len(rows[r])] = 1
      out[chunk] = self._run(ids, mask)[: len(chunk)]
    return out


def load(folder: str | pathlib.Path, **kwargs) -> ExportedEmbedder:
  return ExportedEmbedder(folder, **kwargs)


def main() -> None:
  parser = argparse.ArgumentParser(description="Embed a text file (one post a line) with this exported model.")
  parser.add_argument("--input", required=True)
  parser.add_argument("--output", required=True, help=".npy file for the [N, D] float32 embeddings")
  parser.add_argument("--batch_size", type=int, default=32)
  args = parser.parse_args()
  with open(args.input, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
    texts = [line.rstrip("\r\n") for line in f]
  vectors = load(pathlib.Path(__file__).resolve().parent, batch_size=args.batch_size)(texts)
  np.save(args.output, vectors)
  print(f"embedded {len(texts)} texts -> {args.output} {vectors.shape}")


if __name__ == "__main__":
  main()
