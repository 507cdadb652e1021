r"""Output-space mixing of a general and a tuned embedding, scored on the config's suite.

  python scripts/mix_embeddings.py --config configs/multitask.py:demo --general minilm-l6 \
      --tuned workdirs/demo_w0 --weights 0.3,0.5,0.7 --out out/mix_w0
  python scripts/mix_embeddings.py --config configs/multitask.py:demo --general start --general_dims 64 \
      --tuned workdirs/demo_w0_d64 --weights 0.5 --out out/mix_w0_64x64

Each text's embedding is [sqrt(1 - w) * g, sqrt(w) * t] for unit vectors g (general) and t (tuned), so the
cosine of two texts is (1 - w) * cos_g + w * cos_t: the tuned model's similarity, blended with a general
one it cannot move. Distillation holds the tuned encoder itself near the base and so limits what it
learns; blending the outputs keeps the base's similarity beside a tuned model that learnt freely.

`--general`: a model (alias, folder or workdir), or "start": the tuned run's own start, the base through the
PCA projection the run fitted (WORKDIR/projection_init.npz). `--general_dims k` keeps its first k axes (for
"start", the k leading PCA axes). Writes OUT_<w>.json in `pe_jax.evaluate`'s format, for
scripts/compare_evals.py; w 0 is the general model alone, 1 the tuned one.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from pe_jax import cli
from pe_jax.evaluation import suite as suite_lib
from pe_jax.models.loading import load_model
from pe_jax.models.trained import load_trained_model
from pe_jax.runtime import enable_compilation_cache
from pe_jax.serving.embedder import Embedder
from pe_jax.training.warm_start import start_weights

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose suite scores, e.g. configs/multitask.py:demo.")
_GENERAL = flags.DEFINE_string("general", None, "General model: alias, folder, workdir, or 'start' (the tuned run's start).")
_GENERAL_DIMS = flags.DEFINE_integer("general_dims", None, "Keep the general embedding's first k axes.")
_TUNED = flags.DEFINE_string("tuned", None, "The tuned model's training workdir.")
_WEIGHTS = flags.DEFINE_list("weights", ["0.5"], "Weights w of the tuned embedding, in [0, 1].")
_OUT = flags.DEFINE_string("out", None, "Prefix of the result files: OUT_<w>.json.")
flags.mark_flags_as_required(["config", "general", "tuned", "out"])


def unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def mix(general: np.ndarray, tuned: np.ndarray, w: float) -> np.ndarray:
  """[sqrt(1 - w) * g, sqrt(w) * t] of unit rows: unit rows whose cosines are (1 - w) cos_g + w cos_t."""
  return np.concatenate([np.sqrt(1 - w) * unit(general), np.sqrt(w) * unit(tuned)], -1)


def general_embedder(name: str, tuned: pathlib.Path, tuned_model, dims: int | None):
  """EmbedFn of the general model, cut to its first `dims` axes (`mix` re-normalises). For "start", the
  tuned run's loaded (encoder, tokenizer, prefix) gives the layout and tokenizer: it is not read twice."""
  if name == "start":
    encoder, tokenizer, prefix = tuned_model
    base = json.loads((tuned / "config.json").read_text())["model"]["base"]
    start = start_weights(encoder, tuned, base)
    encoder = nnx.merge(nnx.graphdef(encoder), nnx.from_flat_state([(k, nnx.Param(v)) for k, v in start.items()]))
  else:
    encoder, tokenizer, prefix = load_model(name)
  embed = Embedder(encoder, tokenizer, prefix=prefix)
  if dims is not None and not 0 < dims <= embed.dim:
    raise app.UsageError(f"--general_dims={dims}: the general embedding has {embed.dim} axes")
  return lambda texts: np.asarray(embed(texts))[:, :dims]


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  weights = [float(w) for w in _WEIGHTS.value]
  if any(not 0 <= w <= 1 for w in weights):
    raise app.UsageError(f"--weights={','.join(_WEIGHTS.value)}: each weight must lie in [0, 1]")
  enable_compilation_cache()
  config, tuned = _CONFIG.value, pathlib.Path(_TUNED.value)
  tuned_model = load_trained_model(tuned)
  general = suite_lib.memoized(general_embedder(_GENERAL.value, tuned, tuned_model, _GENERAL_DIMS.value))
  model, tokenizer, prefix = tuned_model
  tuned_embed = Embedder(model, tokenizer, prefix=prefix)
  specific = suite_lib.memoized(lambda texts: np.asarray(tuned_embed(texts)))
  suite = suite_lib.build_suite(config, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
  for w in weights:
    results = suite_lib.run_suite(suite, lambda texts, w=w: mix(general(texts), specific(texts), w),
                                  tasks=list(config.tasks))
    out = pathlib.Path(f"{_OUT.value}_{w:g}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    name = f"{_GENERAL.value}{'' if _GENERAL_DIMS.value is None else f'[:{_GENERAL_DIMS.value}]'} + {tuned} (w {w:g})"
    out.write_text(json.dumps({"model": name, "results": results}, indent=2))
    print(f"w {w:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(results.items())))


if __name__ == "__main__":
  cli.run(main)
