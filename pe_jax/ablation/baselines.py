"""The untrained references of an ablation, scored by the same suite as the trained runs.

  base      the untuned encoder at its own width (384-d for MiniLM): the general-purpose embedding;
  base_pca  the same, cut to the projection's width by PCA fitted on training posts: the fair baseline
            of the same width as the trained embedding (what the width alone keeps, for free).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from pe_jax.evaluation import metrics as metrics_lib
from pe_jax.evaluation import suite as suite_lib
from pe_jax.serving.embedder import Embedder
from pe_jax.tasks.pairs import PairTask, sample_posts

BASE, BASE_PCA = "base", "base_pca"
BASELINES = (BASE, BASE_PCA)


def base_embedder(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Embedder:
  """The encoder the runs start from, without the trained projection (random_init: the seed's init)."""
  from pe_jax.training import train as train_lib  # noqa: PLC0415 - the trainer imports this package's users

  base = config.copy_and_resolve_references()
  base.model.encoder.projection_dim = None
  model, tokenizer, source = train_lib.build_model(base, mesh, head_specs=[])
  return Embedder(model.encoder, tokenizer, prefix=source.prefix, mesh=mesh)


def evaluate_baselines(config: ml_collections.ConfigDict, suite, tasks: Mapping[str, PairTask],
                       mesh: jax.sharding.Mesh, names: Sequence[str]
                       ) -> dict[str, tuple[dict[str, float], dict[str, np.ndarray]]]:
  """{baseline: (suite results, per-triplet outcomes)} for the baselines in `names`."""
  embedder = suite_lib.memoized(base_embedder(config, mesh))  # both baselines embed the same texts
  embed_fns: dict[str, Callable[[Sequence[str]], np.ndarray]] = {}
  if BASE in names:
    embed_fns[BASE] = embedder
  if BASE_PCA in names:
    dim = config.model.encoder.projection_dim
    if not dim:
      raise ValueError("baseline base_pca needs model.encoder.projection_dim (the width it cuts to)")
    fit = embedder(sample_posts(tasks, config.ablation.pca_fit_posts, config.seed))
    projection = metrics_lib.pca_reduce(fit, dim)
    embed_fns[BASE_PCA] = lambda texts: projection(embedder(texts))
  scored = {}
  for name, fn in embed_fns.items():
    outcomes: dict[str, np.ndarray] = {}
    scored[name] = (suite_lib.run_suite(suite, fn, tasks=list(config.tasks), outcomes=outcomes), outcomes)
  return scored
