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
import time

from absl import flags

from pe_jax import cli, distributed
from pe_jax.serving.post_files import ReadStats, check_input, parse_jsonl, read_jsonl, read_lines

_MODEL = flags.DEFINE_string("model", "minilm-l6", "Alias, Hugging Face folder, hub id or training workdir.")
_INPUT = flags.DEFINE_string("input", None, "Text file (one post a line) or JSONL with a `text` field.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the [N, D] float32 .npy (or a folder of parts).",
                              required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing .npy --output (and its .ids.json).")
_FORMAT = flags.DEFINE_enum("format", "auto", ["auto", "text", "jsonl"], "Input format; auto goes by extension.")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "JSONL field holding the post.")
_ID_FIELD = flags.DEFINE_string("id_field", "id", "JSONL field holding the post id (kept in OUTPUT.ids.json).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Packed rows of 128 tokens per jitted call (fixed, so shapes never "
                              "change; several posts share a row).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_LINES_PER_PART = flags.DEFINE_integer("lines_per_part", 100_000, "Input lines per part file (folder output).")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Independent workers of a cluster scheduler (folder output).")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "This worker's index in [0, --num_shards).")
_DISTRIBUTED = distributed.define_flags()


def embed_parts(embedder, path: pathlib.Path, out_dir: pathlib.Path, *, jsonl: bool, model: str,
                lines_per_part: int, num_workers: int, worker: int, text_field: str = "text",
                id_field: str = "id", read_stats: ReadStats | None = None) -> tuple[list[int], list[int]]:
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
    texts = (parse_jsonl(lines, path, text_field, id_field, ids, first_lineno=first, stats=read_stats) if jsonl
             else lines)
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
      raise cli.UsageError("--num_shards/--shard_index split a job of independent processes; a multi-process JAX "
                           "job (--num_processes) splits itself by process")
    return jax.process_count(), jax.process_index()
  if not 0 <= _SHARD_INDEX.value < _NUM_SHARDS.value:
    raise cli.UsageError(f"--shard_index {_SHARD_INDEX.value} is outside [0, --num_shards {_NUM_SHARDS.value})")
  return _NUM_SHARDS.value, _SHARD_INDEX.value


def _read_all(path: pathlib.Path, jsonl: bool, stats: ReadStats) -> tuple[list[str], list]:
  """Every post and id of a one-file output, read before the model loads: a bad line fails in seconds."""
  ids: list = []
  texts = list(read_jsonl(path, _TEXT_FIELD.value, _ID_FIELD.value, ids, stats) if jsonl else read_lines(path, stats))
  if not texts:
    raise ValueError(f"--input {path}: no posts, only {stats.blank} blank lines")
  return texts, ids


def _save(out: pathlib.Path, vectors, ids: list | None) -> None:
  """Writes beside `out`, then renames: an --overwrite that fails leaves the old output whole."""
  import numpy as np

  out.parent.mkdir(parents=True, exist_ok=True)
  ids_path = out.with_suffix(".ids.json")
  staged = {out: out.with_name(out.name + ".partial")}
  with open(staged[out], "wb") as f:
    np.save(f, vectors)
  if ids is not None:
    staged[ids_path] = ids_path.with_name(ids_path.name + ".partial")
    staged[ids_path].write_text(json.dumps(ids))
  for final, partial in staged.items():
    partial.replace(final)
  if ids is None:
    ids_path.unlink(missing_ok=True)  # an older JSONL run's ids would no longer match the rows


def main(argv):
  del argv
  path, out = pathlib.Path(_INPUT.value), pathlib.Path(_OUTPUT.value)
  one_file = out.suffix == ".npy"
  jsonl = _FORMAT.value == "jsonl" or (_FORMAT.value == "auto" and path.suffix in (".jsonl", ".ndjson"))
  if one_file and not _OVERWRITE.value:
    taken = [p for p in (out, out.with_suffix(".ids.json")) if p.exists()]
    if taken:
      raise FileExistsError(f"--output {taken[0]} exists; pass --overwrite to replace it")
  check_input(path)
  read_stats = ReadStats()
  if one_file:
    texts, ids = _read_all(path, jsonl, read_stats)

  distributed.initialize_from_flags(_DISTRIBUTED)  # before anything touches a device
  import jax

  from pe_jax import sharding as sharding_lib
  from pe_jax.runtime import enable_compilation_cache
  from pe_jax.serving.embedder import Embedder

  enable_compilation_cache()
  num_workers, worker = _workers()
  if one_file and num_workers > 1:
    raise cli.UsageError(f"--output {out}: {num_workers} workers write a folder of parts, not one .npy file")

  start = time.perf_counter()
  # Each worker embeds on its own devices only: embedding needs nothing from other processes.
  devices = jax.local_devices()
  mesh = sharding_lib.make_mesh({"data": -1}, devices)
  batch_size = -(-_BATCH.value // len(devices)) * len(devices)
  embedder = Embedder.from_pretrained(_MODEL.value, mesh=mesh, batch_size=batch_size,
                                      config_overrides={"dtype": _DTYPE.value})
  loaded = time.perf_counter()
  if one_file:
    vectors = embedder.embed(texts, progress=True)
    _save(out, vectors, ids if jsonl else None)
    where = f"{out} {vectors.shape}"
  else:
    embedded, skipped = embed_parts(
        embedder, path, out, jsonl=jsonl, model=_MODEL.value, lines_per_part=_LINES_PER_PART.value,
        num_workers=num_workers, worker=worker, text_field=_TEXT_FIELD.value, id_field=_ID_FIELD.value,
        read_stats=read_stats)
    where = f"{out} (parts {embedded}; {len(skipped)} already finished, skipped)"
  done = time.perf_counter()
  s = embedder.stats
  read = read_stats.summary()
  print(f"embedded {s.texts} posts -> {where} in {done - start:.1f}s "
        f"(load {loaded - start:.1f}s, {s.texts / max(done - loaded, 1e-9):.0f} posts/s incl. compile); "
        f"empty {s.empty}, truncated to {embedder.tokenizer.max_length} tokens {s.truncated}, "
        f"invalid unicode replaced {s.invalid_unicode}{'; ' + read if read else ''}; "
        f"{embedder.num_traces} shapes compiled")


if __name__ == "__main__":
  cli.run(main)
