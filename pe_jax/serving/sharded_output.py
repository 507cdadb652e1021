"""Embeddings of a large input as part files plus a manifest: written by many workers, resumable.

  OUT/manifest.json      the job: input file, model, and each part's line range and byte offset
  OUT/part-00042.npy     [rows, D] float32, the part's posts in input order
  OUT/part-00042.ids.json  their ids (a JSONL `id` field, else the 1-based line number)

A part is `lines_per_part` consecutive input lines, found by byte offset, so a worker reads only its
own parts. Part p belongs to worker p % num_workers. A part is finished once its .npy exists (each
file is written whole under a temporary name, then renamed), so a rerun of a killed job embeds only
the parts that are missing. Every worker writes the same manifest; one written for another input,
model or part size is refused rather than mixed with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Any, Iterator

import numpy as np

MANIFEST_FILE = "manifest.json"
_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class Part:
  index: int
  first_line: int  # 0-based
  num_lines: int
  byte_offset: int


def plan_parts(path: pathlib.Path, lines_per_part: int) -> list[Part]:
  """Cuts `path` into parts of `lines_per_part` lines (the last one shorter), in one pass."""
  if lines_per_part < 1:
    raise ValueError(f"lines_per_part must be >= 1, got {lines_per_part}")
  starts = [0]  # byte offset of every part's first line
  lines, size, last = 0, 0, b"\n"
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      newlines = np.flatnonzero(np.frombuffer(chunk, np.uint8) == ord("\n"))
      # Line number (0-based) that starts after each newline here; a part starts at each multiple.
      after = lines + 1 + np.arange(len(newlines))
      starts += (size + newlines[after % lines_per_part == 0] + 1).tolist()
      lines += len(newlines)
      size += len(chunk)
      last = chunk[-1:]
  total = lines + (last != b"\n")  # a last line without its newline still counts
  starts = [s for s in starts if s < size]
  return [Part(i, i * lines_per_part, min(lines_per_part, total - i * lines_per_part), start)
          for i, start in enumerate(starts)]


def read_part_lines(path: pathlib.Path, part: Part) -> Iterator[str]:
  """The part's lines without their line ends; invalid UTF-8 kept as surrogates, like `pe_jax.embed`."""
  with open(path, "rb") as f:
    f.seek(part.byte_offset)
    for _ in range(part.num_lines):
      yield f.readline().decode("utf-8", errors="surrogateescape").rstrip("\r\n")


def part_files(out_dir: pathlib.Path, index: int) -> tuple[pathlib.Path, pathlib.Path]:
  """(embeddings .npy, ids .json) of part `index`."""
  stem = out_dir / f"part-{index:05d}"
  return stem.with_suffix(".npy"), stem.with_suffix(".ids.json")


def is_finished(out_dir: pathlib.Path, index: int) -> bool:
  return part_files(out_dir, index)[0].exists()


def assigned_parts(parts: list[Part], num_workers: int, worker: int) -> list[Part]:
  if not 0 <= worker < num_workers:
    raise ValueError(f"worker {worker} is outside [0, {num_workers})")
  return [p for p in parts if p.index % num_workers == worker]


def _write_whole(path: pathlib.Path, write) -> None:
  """`write(file)` into a temporary file beside `path`, renamed to it only once complete."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def write_part(out_dir: pathlib.Path, index: int, vectors: np.ndarray, ids: list) -> None:
  if len(ids) != len(vectors):
    raise ValueError(f"part {index}: {len(vectors)} embeddings but {len(ids)} ids")
  npy, ids_file = part_files(out_dir, index)
  for stale in out_dir.glob(f".{npy.stem}.*.partial"):  # left by a killed worker; only this part's owner looks
    stale.unlink(missing_ok=True)
  _write_whole(ids_file, lambda f: f.write(json.dumps(ids).encode()))
  _write_whole(npy, lambda f: np.save(f, np.asarray(vectors, np.float32)))  # last: marks the part finished


def write_manifest(out_dir: pathlib.Path, manifest: dict[str, Any]) -> None:
  """Writes the job's manifest, or checks that the one already there describes the same job."""
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / MANIFEST_FILE
  if path.exists():
    old = json.loads(path.read_text())
    differs = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
    if differs:
      lines = [f"  {k}: {path} has {_short(old.get(k))}, this job has {_short(manifest.get(k))}" for k in differs]
      raise ValueError(f"{out_dir} holds parts of another job; use a new output folder or the same "
                       f"settings.\n" + "\n".join(lines))
    return
  _write_whole(path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) < 120 else text[:117] + "..."


def read_manifest(out_dir: pathlib.Path) -> dict[str, Any]:
  path = pathlib.Path(out_dir) / MANIFEST_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no manifest; is {out_dir} the output folder of a sharded embedding job?")
  return json.loads(path.read_text())


def missing_parts(out_dir: str | os.PathLike, manifest: dict | None = None) -> list[int]:
  """Unfinished part indices; `manifest` saves reading it again when the caller has it."""
  out_dir = pathlib.Path(out_dir)
  manifest = manifest or read_manifest(out_dir)
  return [p["index"] for p in manifest["parts"] if not is_finished(out_dir, p["index"])]


def load(out_dir: str | os.PathLike) -> tuple[list, np.ndarray]:
  """(ids, embeddings [N, D]) of a finished job, in input order."""
  out_dir = pathlib.Path(out_dir)
  manifest = read_manifest(out_dir)
  missing = missing_parts(out_dir, manifest)
  if missing:
    raise FileNotFoundError(f"{out_dir}: parts {missing} of {len(manifest['parts'])} are not finished; "
                            f"rerun the same embedding command to finish them")
  ids, vectors = [], []
  for p in manifest["parts"]:
    npy, ids_file = part_files(out_dir, p["index"])
    vectors.append(np.load(npy))
    ids += json.loads(ids_file.read_text())
  if not vectors:
    return ids, np.zeros((0, manifest["dim"]), np.float32)
  return ids, np.concatenate(vectors)
