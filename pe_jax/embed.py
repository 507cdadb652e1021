r"""Embed posts from a file with a pretrained or trained model.

  python -m pe_jax.embed --model minilm-l6 --input posts.txt --output posts.npy
  python -m pe_jax.embed --model WORKDIR --input posts.jsonl --output posts.npy   # ids -> posts.ids.json

A `.jsonl` input holds one JSON object a line with a `text` field (and optionally `id`); anything else
is read as plain text, one post a line. Output rows follow input order.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Iterator

from absl import app, flags

_MODEL = flags.DEFINE_string("model", "minilm-l6", "Alias, Hugging Face folder, hub id or training workdir.")
_INPUT = flags.DEFINE_string("input", None, "Text file (one post a line) or JSONL with a `text` field.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the [N, D] float32 .npy.", required=True)
_FORMAT = flags.DEFINE_enum("format", "auto", ["auto", "text", "jsonl"], "Input format; auto goes by extension.")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "JSONL field holding the post.")
_ID_FIELD = flags.DEFINE_string("id_field", "id", "JSONL field holding the post id (kept in OUTPUT.ids.json).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Rows per batch (fixed, so shapes never change).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")


def read_jsonl(path: pathlib.Path, text_field: str, id_field: str, ids: list) -> Iterator[str]:
  """Yields texts; fills `ids` as it goes. Errors name the file, line and field."""
  with open(path, encoding="utf-8", errors="surrogateescape") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(record, dict) or text_field not in record:
        raise ValueError(f"{path}:{lineno}: no {text_field!r} field")
      if not isinstance(record[text_field], str):
        raise TypeError(f"{path}:{lineno}: field {text_field!r} is {type(record[text_field]).__name__}, not a string")
      ids.append(record.get(id_field, lineno))
      yield record[text_field]


def read_lines(path: pathlib.Path) -> Iterator[str]:
  # surrogateescape keeps invalid UTF-8 bytes visible so the embedder can count and replace them.
  with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
    for line in f:
      yield line.rstrip("\r\n")


def count_lines(path: pathlib.Path) -> int:
  with open(path, "rb") as f:
    return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def main(argv):
  del argv
  import numpy as np

  from pe_jax.runtime import enable_compilation_cache
  from pe_jax.serving.embedder import Embedder

  enable_compilation_cache()
  path, out = pathlib.Path(_INPUT.value), pathlib.Path(_OUTPUT.value)
  if not path.is_file():
    sys.exit(f"--input {path}: no such file")
  if out.suffix != ".npy":
    sys.exit(f"--output {out}: must end in .npy (numpy would add the suffix and the ids sidecar would not match)")
  jsonl = _FORMAT.value == "jsonl" or (_FORMAT.value == "auto" and path.suffix in (".jsonl", ".ndjson"))
  ids: list = []
  texts = read_jsonl(path, _TEXT_FIELD.value, _ID_FIELD.value, ids) if jsonl else read_lines(path)

  start = time.perf_counter()
  embedder = Embedder.from_pretrained(_MODEL.value, batch_size=_BATCH.value, config_overrides={"dtype": _DTYPE.value})
  loaded = time.perf_counter()
  vectors = embedder.embed(texts, progress=True, total=count_lines(path))
  done = time.perf_counter()

  out.parent.mkdir(parents=True, exist_ok=True)
  np.save(out, vectors)
  if jsonl:
    out.with_suffix(".ids.json").write_text(json.dumps(ids))
  s = embedder.stats
  print(f"embedded {s.texts} posts -> {out} {vectors.shape} in {done - start:.1f}s "
        f"(load {loaded - start:.1f}s, {s.texts / max(done - loaded, 1e-9):.0f} posts/s incl. compile); "
        f"empty {s.empty}, truncated to {embedder.tokenizer.max_length} tokens {s.truncated}, "
        f"invalid unicode replaced {s.invalid_unicode}; {embedder.num_traces} shapes compiled")


if __name__ == "__main__":
  app.run(main)
