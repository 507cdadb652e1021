"""The trained object: the shared siamese encoder plus one head per task."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from flax import nnx

from pe_jax.models.encoder import Encoder
from pe_jax.models.heads import TaskHeads


class PostEmbeddingModel(nnx.Module):
  """`encoder` is what gets exported and served; `heads` exist for training and travel in checkpoints."""

  def __init__(self, encoder: Encoder, head_specs: Sequence[tuple[str, Mapping[str, Any]]], *, rngs: nnx.Rngs):
    self.encoder = encoder
    self.heads = TaskHeads(head_specs, dim=encoder.cfg.embedding_dim, rngs=rngs)
