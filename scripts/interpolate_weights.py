r"""Weight-space interpolation between a run's start and its end, scored on the config's suite.

  python scripts/interpolate_weights.py --workdir workdirs/probe_F --config configs/multitask.py:demo \
      --alphas 0,0.5 --out out/probe_F_interp

The start is what the run began from: the base encoder's pretrained weights with the projection the
run fitted by PCA (WORKDIR/projection_init.npz). Each alpha scores (1 - alpha) * start + alpha * end
(WiSE-FT, Wortsman et al. 2022: interpolating a fine-tune with its start often keeps what the start
knew at little cost to what the fine-tune learnt). alpha 0 is the base cut to 50-d, 1 the trained
model. Writes OUT_<alpha>.json in `pe_jax.evaluate`'s format, for scripts/compare_evals.py.
"""

from __future__ import annotations

import json
import pathlib

from flax import nnx
from absl import app, flags
from ml_collections import config_flags

from pe_jax import cli
from pe_jax.evaluation import suite as suite_lib
from pe_jax.models.trained import load_trained_model
from pe_jax.runtime import enable_compilation_cache
from pe_jax.serving.embedder import Embedder
from pe_jax.training.warm_start import PROJECTION_INIT_FILE, start_weights


_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose suite scores, e.g. configs/multitask.py:demo.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir (its latest checkpoint is the end).")
_ALPHAS = flags.DEFINE_list("alphas", ["0", "0.5"], "Weights of the trained end.")
_OUT = flags.DEFINE_string("out", None, "Prefix of the result files: OUT_<alpha>.json.")
flags.mark_flags_as_required(["config", "workdir", "out"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  enable_compilation_cache()
  config, workdir = _CONFIG.value, pathlib.Path(_WORKDIR.value)
  if not (workdir / PROJECTION_INIT_FILE).is_file():
    raise app.UsageError(f"{workdir}: no {PROJECTION_INIT_FILE}; only a run with model.projection_init='pca' has "
                         "a start to interpolate from")
  encoder, tokenizer, prefix = load_trained_model(workdir)
  start = start_weights(encoder, workdir, json.loads((workdir / "config.json").read_text())["model"]["base"])
  end = dict(nnx.to_flat_state(nnx.state(encoder)))
  suite = suite_lib.build_suite(config, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
  graphdef = nnx.graphdef(encoder)
  for alpha in (float(a) for a in _ALPHAS.value):
    mixed = nnx.from_flat_state([(k, nnx.Param((1 - alpha) * start[k] + alpha * v.get_value())) for k, v in end.items()])
    results = suite_lib.run_suite(suite, Embedder(nnx.merge(graphdef, mixed), tokenizer, prefix=prefix),
                                  tasks=list(config.tasks))
    out = pathlib.Path(f"{_OUT.value}_{alpha:g}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": f"{workdir} (alpha {alpha:g})", "results": results}, indent=2))
    print(f"alpha {alpha:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(results.items())))


if __name__ == "__main__":
  cli.run(main)
