r"""Run a positive-transfer ablation: each task alone, all tasks, all but one, recipe variants; then the report.

  python -m pe_jax.ablate --config configs/ablation/posts.py --workdir workdirs/ablation --dry_run  # plan only
  python -m pe_jax.ablate --config configs/ablation/posts.py --workdir workdirs/ablation
  python -m pe_jax.ablate --config configs/ablation/smoke.py --workdir /tmp/ablation   # ~2 min on CPU
  python -m pe_jax.ablate --config configs/ablation/posts.py --config.ablation.seeds='(0,1,2,3)' \
      --config.ablation.leave_one_out_seeds='(0,1)' --workdir ...

The plan (every run, its steps and anchors, the estimated time) is printed before anything trains.
Rerunning the same command skips finished runs and resumes an interrupted one; more seeds, kinds,
tasks or variants reuse what is finished. The report lands in WORKDIR/transfer.json, transfer.md
and transfer.png.
"""

from absl import flags
from ml_collections import config_flags

from pe_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Ablation config, e.g. configs/ablation/posts.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and the report go.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Raw data folder (default: $PE_JAX_DATA_DIR).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan and its estimated time; train nothing.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from pe_jax.ablation import run_ablation
  from pe_jax.runtime import enable_compilation_cache

  enable_compilation_cache()
  config = _CONFIG.value
  if _DATA_DIR.value:
    with config.unlocked():
      config.data_dir = _DATA_DIR.value
  report = run_ablation(config, _WORKDIR.value, dry_run=_DRY_RUN.value)
  for task, word in (report or {}).get("verdict", {}).items():
    cell = report["transfer"]["all"][task]
    print(f"{task}: {word} ({cell['mean']:+.3f} vs single-task, 95% [{cell['low']:+.3f}, {cell['high']:+.3f}])")


if __name__ == "__main__":
  cli.run(main, log_in=_WORKDIR, console=("pe_jax.data",))
