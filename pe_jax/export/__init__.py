"""Trained checkpoints out of JAX: sentence-transformers / Hugging Face folders, StableHLO, ONNX.

  python -m pe_jax.export --workdir WORKDIR --format sentence-transformers --out OUT

`export(workdir, fmt, out)` is the same from Python; `export_source` exports an encoder that is
already in memory (a pretrained alias, for instance).
"""

from pe_jax.export.checkpoint import CheckpointError, ExportSource, load_checkpoint
from pe_jax.export.formats import FORMATS, ExportResult, export, export_source
from pe_jax.export.hf_folder import UnexpressibleError

__all__ = ["FORMATS", "CheckpointError", "ExportResult", "ExportSource", "UnexpressibleError", "export",
           "export_source", "load_checkpoint"]
