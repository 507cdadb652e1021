"""One export call: pick the checkpoint, check the format can say everything, write OUT in one move.

The folder is written next to OUT under a temporary name and renamed at the end, so a failed export
leaves no half-written OUT and `--overwrite` replaces an old export only once the new one is complete.
Every OUT gets `pe_jax_export.json`: where it came from, and what the format could not hold.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable

from pe_jax.export import hf_folder, onnx_graph, st_folder, stablehlo_export
from pe_jax.export.checkpoint import ExportSource, load_checkpoint
from pe_jax.export.hf_folder import UnexpressibleError
from pe_jax.suggest import did_you_mean

PROVENANCE_FILE = "pe_jax_export.json"


def _heads_left_out(source: ExportSource, fmt: str) -> list[str]:
  if not source.head_specs:
    return []
  names = ", ".join(n + (f" (projection to {o['projection_dim']})" if o.get("projection_dim") else "")
                    for n, o in source.head_specs)
  return [f"task heads [{names}]: the {fmt} format holds the embedding only "
          "(--format sentence-transformers keeps them in task_heads/)"]


def _write_st(folder: pathlib.Path, source: ExportSource) -> list[str]:
  st_folder.write_st_folder(folder, source)
  return []


def _write_hf(folder: pathlib.Path, source: ExportSource) -> list[str]:
  if not source.encoder.cfg.normalize:
    raise UnexpressibleError("normalize=False: a Hugging Face folder has no module list to say so and readers "
                             "normalise by default; use --format sentence-transformers")
  hf_folder.write_hf_folder(folder, source.encoder, source.tokenizer, source.prefix)
  return _heads_left_out(source, "hf")


def _write_stablehlo(folder: pathlib.Path, source: ExportSource) -> list[str]:
  stablehlo_export.write_stablehlo_folder(folder, source.encoder, source.tokenizer, source.prefix)
  return _heads_left_out(source, "stablehlo")


def _write_onnx(folder: pathlib.Path, source: ExportSource) -> list[str]:
  onnx_graph.write_onnx_folder(folder, source.encoder, source.tokenizer, source.prefix)
  return _heads_left_out(source, "onnx")


# name -> writer(folder, source) -> what the format left out, each item naming the feature and why.
FORMATS: dict[str, Callable[[pathlib.Path, ExportSource], list[str]]] = {
    "sentence-transformers": _write_st,
    "hf": _write_hf,
    "stablehlo": _write_stablehlo,
    "onnx": _write_onnx,
}


@dataclasses.dataclass(frozen=True)
class ExportResult:
  out: pathlib.Path
  format: str
  step: int | None
  left_out: list[str]


def check_format(fmt: str) -> None:
  if fmt not in FORMATS:
    raise ValueError(f"unknown export format {fmt!r}; known formats: {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")


def _check_out(out: pathlib.Path, overwrite: bool, workdir: pathlib.Path | None) -> None:
  if out.exists() and not out.is_dir():
    raise FileExistsError(f"--out {out} is a file, not a folder")
  if workdir is not None and (out.resolve() == workdir.resolve() or out.resolve() in workdir.resolve().parents):
    raise ValueError(f"--out {out} is or contains the workdir {workdir}: exporting there would replace the run")
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it")


def _share(folder: pathlib.Path) -> None:
  """Ordinary permissions: mkdtemp makes the folder private and safetensors writes files 0600."""
  umask = os.umask(0)
  os.umask(umask)
  for path in [folder, *folder.rglob("*")]:
    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def export_source(source: ExportSource, fmt: str, out: str | pathlib.Path, *, overwrite: bool = False) -> ExportResult:
  """Writes `source` to `out` in format `fmt` (see FORMATS)."""
  check_format(fmt)
  out = pathlib.Path(out)
  _check_out(out, overwrite, source.workdir)
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
  try:
    left_out = FORMATS[fmt](staging, source)
    (staging / PROVENANCE_FILE).write_text(json.dumps({
        "format": fmt, "workdir": str(source.workdir) if source.workdir else None, "step": source.step,
        "encoder": source.encoder.cfg.to_dict(), "prefix": source.prefix, "left_out": left_out}, indent=2) + "\n")
    _share(staging)
    if out.exists():
      shutil.rmtree(out)
    staging.rename(out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return ExportResult(out, fmt, source.step, left_out)


def export(workdir: str | pathlib.Path, fmt: str, out: str | pathlib.Path, *, step: int | None = None,
           best: bool = False, overwrite: bool = False) -> ExportResult:
  """Exports the workdir's latest (or `step`'s, or best) checkpoint to `out` in format `fmt`."""
  check_format(fmt)
  _check_out(pathlib.Path(out), overwrite, pathlib.Path(workdir))  # before the slow restore
  return export_source(load_checkpoint(workdir, step=step, best=best), fmt, out, overwrite=overwrite)
