r"""Embed posts from a file with a pretrained or trained model.

  python -m pe_jax.embed --model minilm-l6 --input posts.txt --output posts.npy
  python -m pe_jax.embed --model WORKDIR --input posts.jsonl --output posts.npy   # ids -> posts.ids.json

A `.jsonl` input holds one JSON object a line with a `text` field (and optionally `id`); anything else
is read as plain text, one post a line. Output rows follow input order.

An --output that is not a .npy file is a folder of part files plus a manifest (see
`pe_jax.serving.sharded_output`), written by several workers and resumable: rerun the same command
after a failure and only the unfinished parts are embedded. Workers are the processes of a
multi-process JAX job, or independent jobs of a cluster scheduler:

  python -m pe_jax.embed --model WORKDIR --input posts.jsonl --output out/ \
      --coordinator_address=host0:1234 --num_processes=4 --process_id=$RANK
  python -m pe_jax.embed --model WORKDIR --input posts.jsonl --output out/ \
      --num_shards=100 --shard_index=$SLURM_ARRAY_TASK_ID

Each worker embeds on all of its own devices; `sharded_output.load(out)` reads the result back.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Iterable, Iterator

from absl import app, flags

from pe_jax import distributed

_MODEL = flags.DEFINE_string("model", "minilm-l6", "Alias, Hugging Face folder, hub id or training workdir.")
_INPUT = flags.DEFINE_string("input", None, "Text file (one post a line) or JSONL with a `text` field.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the [N, D] float32 .npy.", required=True)
_FORMAT = flags.DEFINE_enum("format", "auto", ["auto", "text", "jsonl"], "Input format; auto goes by extension.")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "JSONL field holding the post.")
_ID_FIELD = flags.DEFINE_string("id_field", "id", "JSONL field holding the post id (kept in OUTPUT.ids.json).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Rows per batch (fixed, so shapes never change).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_LINES_PER_PART = flags.DEFINE_integer("lines_per_part", 100_000, "Input lines per part file (folder output).")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Independent workers of a cluster scheduler (folder output).")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "This worker's index in [0, --num_shards).")
_DISTRIBUTED = distributed.define_flags()


def parse_jsonl(lines: Iterable[str], source: object, text_field: str, id_field: str, ids: list, *,
                first_lineno: int = 1) -> Iterator[str]:
  """Yields the texts of JSONL `lines`; fills `ids` as it goes. Errors name the source, line and field."""
  for lineno, line in enumerate(lines, first_lineno):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{source}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict) or text_field not in record:
      raise ValueError(f"{source}:{lineno}: no {text_field!r} field")
    if not isinstance(record[text_field], str):
      raise TypeError(f"{source}:{lineno}: field {text_field!r} is {type(record[text_field]).__name__}, not a string")
    ids.append(record.get(id_field, lineno))
    yield record[text_field]


def read_jsonl(path: pathlib.Path, text_field: str, id_field: str, ids: list) -> Iterator[str]:
  """Yields texts; fills `ids` as it goes. Errors name the file, line and field."""
  with open(path, encoding="utf-8", errors="surrogateescape") as f:
    yield from parse_jsonl(f, path, text_field, id_field, ids)


def read_lines(path: pathlib.Path) -> Iterator[str]:
  # surrogateescape keeps invalid UTF-8 bytes visible so the embedder can count and replace them.
  with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
    for line in f:
      yield line.rstrip("\r\n")


def count_lines(path: pathlib.Path) -> int:
  with open(path, "rb") as f:
    return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def embed_parts(embedder, path: pathlib.Path, out_dir: pathlib.Path, *, jsonl: bool, model: str,
                lines_per_part: int, num_workers: int, worker: int, text_field: str = "text",
                id_field: str = "id") -> tuple[list[int], list[int]]:
  """Embeds this worker's unfinished parts of `path` into `out_dir`; returns (embedded, skipped) part indices."""
  from pe_jax.serving import sharded_output
  from pe_jax.tokenization import TokenStats

  parts = sharded_output.plan_parts(path, lines_per_part)
  sharded_output.write_manifest(out_dir, {
      "input": str(path.resolve()), "input_bytes": path.stat().st_size, "format": "jsonl" if jsonl else "text",
      "text_field": text_field if jsonl else None, "id_field": id_field if jsonl else None, "model": model,
      "dtype": embedder.config.dtype, "dim": embedder.dim, "lines_per_part": lines_per_part,
      "num_lines": sum(p.num_lines for p in parts), "parts": [vars(p) for p in parts]})
  stats, embedded, skipped = TokenStats(), [], []
  for part in sharded_output.assigned_parts(parts, num_workers, worker):
    if sharded_output.is_finished(out_dir, part.index):
      skipped.append(part.index)
      continue
    lines = sharded_output.read_part_lines(path, part)
    first = part.first_line + 1  # ids and errors count lines from 1, as the one-file output does
    ids = [] if jsonl else list(range(first, first + part.num_lines))
    texts = parse_jsonl(lines, path, text_field, id_field, ids, first_lineno=first) if jsonl else lines
    vectors = embedder.embed(texts)
    stats.add(embedder.stats)
    sharded_output.write_part(out_dir, part.index, vectors, ids)
    embedded.append(part.index)
    print(f"worker {worker}/{num_workers}: part {part.index} ({len(vectors)} posts) -> {out_dir}", flush=True)
  embedder.stats = stats
  return embedded, skipped


def _workers() -> tuple[int, int]:
  """(number of workers, this one's index): the JAX job's processes, or the scheduler's shards."""
  import jax

  if jax.process_count() > 1:
    if _NUM_SHARDS.value != 1:
      sys.exit("--num_shards/--shard_index split a job of independent processes; a multi-process JAX job "
               "(--num_processes) splits itself by process")
    return jax.process_count(), jax.process_index()
  if not 0 <= _SHARD_INDEX.value < _NUM_SHARDS.value:
    sys.exit(f"--shard_index {_SHARD_INDEX.value} is outside [0, --num_shards {_NUM_SHARDS.value})")
  return _NUM_SHARDS.value, _SHARD_INDEX.value


def main(argv):
  del argv
  distributed.initialize_from_flags(_DISTRIBUTED)  # before anything touches a device
  import jax
  import numpy as np

  from pe_jax import sharding as sharding_lib
  from pe_jax.runtime import enable_compilation_cache
  from pe_jax.serving.embedder import Embedder

  enable_compilation_cache()
  path, out = pathlib.Path(_INPUT.value), pathlib.Path(_OUTPUT.value)
  if not path.is_file():
    sys.exit(f"--input {path}: no such file")
  num_workers, worker = _workers()
  one_file = out.suffix == ".npy"
  if one_file and num_workers > 1:
    sys.exit(f"--output {out}: {num_workers} workers write a folder of parts, not one .npy file")
  jsonl = _FORMAT.value == "jsonl" or (_FORMAT.value == "auto" and path.suffix in (".jsonl", ".ndjson"))

  start = time.perf_counter()
  # Each worker embeds on its own devices only: embedding needs nothing from other processes.
  devices = jax.local_devices()
  mesh = sharding_lib.make_mesh({"data": -1}, devices)
  batch_size = -(-_BATCH.value // len(devices)) * len(devices)
  embedder = Embedder.from_pretrained(_MODEL.value, mesh=mesh, batch_size=batch_size,
                                      config_overrides={"dtype": _DTYPE.value})
  loaded = time.perf_counter()
  if one_file:
    ids: list = []
    texts = read_jsonl(path, _TEXT_FIELD.value, _ID_FIELD.value, ids) if jsonl else read_lines(path)
    vectors = embedder.embed(texts, progress=True, total=count_lines(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    if jsonl:
      out.with_suffix(".ids.json").write_text(json.dumps(ids))
    where = f"{out} {vectors.shape}"
  else:
    embedded, skipped = embed_parts(
        embedder, path, out, jsonl=jsonl, model=_MODEL.value, lines_per_part=_LINES_PER_PART.value,
        num_workers=num_workers, worker=worker, text_field=_TEXT_FIELD.value, id_field=_ID_FIELD.value)
    where = f"{out} (parts {embedded}; {len(skipped)} already finished, skipped)"
  done = time.perf_counter()
  s = embedder.stats
  print(f"embedded {s.texts} posts -> {where} in {done - start:.1f}s "
        f"(load {loaded - start:.1f}s, {s.texts / max(done - loaded, 1e-9):.0f} posts/s incl. compile); "
        f"empty {s.empty}, truncated to {embedder.tokenizer.max_length} tokens {s.truncated}, "
        f"invalid unicode replaced {s.invalid_unicode}; {embedder.num_traces} shapes compiled")


if __name__ == "__main__":
  app.run(main)
