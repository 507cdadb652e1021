r"""Export a training workdir's checkpoint for use outside pe_jax.

  python -m pe_jax.export --workdir workdirs/multitask --format sentence-transformers --out exported/st
  python -m pe_jax.export --workdir workdirs/multitask --format onnx --out exported/onnx --best

Formats: sentence-transformers (Hugging Face folder + modules + task heads + model card), hf (the
encoder folder for fine-tuning elsewhere), stablehlo (jax.export program + weights + loader), onnx.
"""

from __future__ import annotations

import sys

from absl import flags

from pe_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to export from.", required=True)
_FORMAT = flags.DEFINE_string("format", None, "sentence-transformers, hf, stablehlo or onnx.", required=True)
_OUT = flags.DEFINE_string("out", None, "Folder to write; refused if it exists and is not empty.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BEST = flags.DEFINE_bool("best", False, "The checkpoint best by the run's best_metric.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out.")


def main(argv):
  del argv
  from pe_jax.export import export
  from pe_jax.export.formats import check_format

  try:
    check_format(_FORMAT.value)
  except ValueError as e:  # a name from a fixed list: the command line is wrong
    raise cli.UsageError(f"--format: {e}") from None
  result = export(_WORKDIR.value, _FORMAT.value, _OUT.value, step=_STEP.value, best=_BEST.value,
                  overwrite=_OVERWRITE.value)
  for item in result.left_out:
    print(f"not exported: {item}", file=sys.stderr)
  print(f"exported {_WORKDIR.value} step {result.step} as {result.format} -> {result.out}")


if __name__ == "__main__":
  cli.run(main)
