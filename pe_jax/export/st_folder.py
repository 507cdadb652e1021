"""The sentence-transformers folder: the Hugging Face folder, the module list, the task heads and a model card.

  modules.json   Transformer -> 1_Pooling -> 2_Dense (the projection, if any) -> N_Normalize
  task_heads/    see `pe_jax.export.heads_folder`
  README.md      see `pe_jax.export.model_card`

Module types use the `sentence_transformers.models.*` names, which every release from 2.x on resolves.
"""

from __future__ import annotations

import json
import pathlib

from pe_jax.export import heads_folder, hf_folder, model_card
from pe_jax.export.checkpoint import ExportSource


def modules(has_projection: bool, normalize: bool) -> list[dict]:
  chain = [("", "Transformer"), (hf_folder.POOLING_DIR, "Pooling")]
  if has_projection:
    chain.append((hf_folder.DENSE_DIR, "Dense"))
  if normalize:
    chain.append((f"{len(chain)}_Normalize", "Normalize"))
  return [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
          for i, (path, kind) in enumerate(chain)]


def write_st_folder(folder: pathlib.Path, source: ExportSource) -> None:
  encoder = source.encoder
  hf_folder.write_hf_folder(folder, encoder, source.tokenizer, source.prefix)
  chain = modules(encoder.projection is not None, encoder.cfg.normalize)
  (folder / "modules.json").write_text(json.dumps(chain, indent=2) + "\n")
  for module in chain:
    if module["type"].endswith("Normalize"):
      # Normalize has no settings, but sentence-transformers expects its folder.
      (folder / module["path"]).mkdir(exist_ok=True)
  if source.heads is not None:
    heads_folder.write_heads(folder, source.heads, source.head_specs)
  if source.workdir is not None:
    title = f"{source.workdir.name} (pe_jax, step {source.step})"
    (folder / "README.md").write_text(model_card.model_card(source, title=title))
