"""What a StableHLO or ONNX folder holds besides the program: the tokenizer, the settings, the loader.

  tokenizer.json     the model's tokenizer
  embedder.json      prefix, truncation length, pad id, output size, and which files hold the program
  load_embedder.py   a copy of `pe_jax.export.standalone_embedder`: runs the folder without pe_jax
"""

from __future__ import annotations

import json
import pathlib
import shutil

import tokenizers

from pe_jax.export import standalone_embedder
from pe_jax.models.encoder import Encoder
from pe_jax.tokenization import ROW_LENGTH

LENGTH_MULTIPLE = 8  # ONNX rows are padded, to a multiple of this: few distinct shapes, little padding


def write_runtime_files(folder: pathlib.Path, encoder: Encoder, tokenizer: tokenizers.Tokenizer, prefix: str, *,
                        fmt: str, files: dict[str, str]) -> None:
  """`files` names the program (and weights) inside `folder`, e.g. {"program": "model.onnx"}."""
  cfg = encoder.cfg
  folder.mkdir(parents=True, exist_ok=True)
  (folder / standalone_embedder.TOKENIZER_FILE).write_text(tokenizer.to_str())
  settings = {"format": fmt, **files, "prefix": prefix, "max_seq_length": cfg.max_seq_length,
              "pad_token_id": cfg.pad_token_id, "length_multiple": LENGTH_MULTIPLE,
              "row_length": min(ROW_LENGTH, cfg.max_seq_length),
              "embedding_dim": cfg.embedding_dim, "pooling": cfg.pooling, "normalized": cfg.normalize}
  (folder / standalone_embedder.SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
  shutil.copyfile(standalone_embedder.__file__, folder / standalone_embedder.LOADER_FILE)
