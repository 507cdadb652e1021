r"""Score any model on a config's evaluation suite: the same triplets and sets the trainer uses.

  python -m pe_jax.evaluate --model minilm-l6 --config configs/multitask.py --out base.json
  python -m pe_jax.evaluate --model workdirs/multitask --config configs/multitask.py --out trained.json

`--model` is an alias, Hugging Face folder, hub id or training workdir (`--best` for its best step).
`--sets` scores part of the suite: task and zero-shot names of the config, e.g. `--sets topic,zs_topic_xl`.
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import flags
from ml_collections import config_flags

from pe_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose tasks and zero-shot sets are scored.")
_MODEL = flags.DEFINE_string("model", None, "Alias, Hugging Face folder, hub id or training workdir.")
_OUT = flags.DEFINE_string("out", None, "Where to write the results JSON.")
_BEST = flags.DEFINE_bool("best", False, "For a workdir: the best checkpoint by the config's best_metric.")
_SETS = flags.DEFINE_list("sets", None, "Only these of the config's tasks and zero-shot sets (default: all).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"],
                           "Compute dtype to score in (default: the model's own, float32 for a pretrained base).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Raw data folder (default: $PE_JAX_DATA_DIR).")
flags.mark_flags_as_required(["config", "model", "out"])


def main(argv):
  del argv
  from pe_jax.runtime import enable_compilation_cache
  from pe_jax.evaluation import suite as suite_lib
  from pe_jax.models.loading import load_model
  from pe_jax.models.trained import load_trained_model
  from pe_jax.serving.embedder import Embedder

  enable_compilation_cache()
  try:
    config = suite_lib.select_sets(_CONFIG.value, _SETS.value)
  except ValueError as e:
    raise cli.UsageError(f"--sets: {e}") from None
  data_dir = _DATA_DIR.value or config.data_dir
  start = time.perf_counter()
  overrides = {} if _DTYPE.value is None else {"dtype": _DTYPE.value}
  if _BEST.value:
    model, tokenizer, prefix = load_trained_model(_MODEL.value, mesh=None, best=True, **overrides)
  else:
    model, tokenizer, prefix = load_model(_MODEL.value, **overrides)
  embedder = Embedder(model, tokenizer, prefix=prefix)
  suite = suite_lib.build_suite(config, data_dir=data_dir, tfds_dir=config.tfds_dir)
  results = suite_lib.run_suite(suite, embedder, tasks=list(config.tasks))
  report = {"model": _MODEL.value, "embedding_dim": embedder.dim, "results": results,
            "seconds": time.perf_counter() - start}
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2))
  for key, value in sorted(results.items()):
    print(f"{key}: {value:.4f}")


if __name__ == "__main__":
  cli.run(main, console=("pe_jax.data",))
