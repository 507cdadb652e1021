r"""Train a multi-task post embedding.

  python -m pe_jax.train --config configs/multitask.py --workdir workdirs/multitask
  python -m pe_jax.train --config configs/multitask.py:smoke --workdir /tmp/smoke --config.total_steps=60

Rerunning the same command continues from the workdir's last checkpoint.

Several hosts (every process runs the same command; the workdir on storage all of them see):

  python -m pe_jax.train --config configs/presets.py:gpu8 --workdir /shared/run \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=$RANK
  python -m pe_jax.train --config configs/presets.py:tpu_v5e_16 --workdir /shared/run --distributed_auto
"""

from absl import flags
from ml_collections import config_flags

from pe_jax import cli, distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/multitask.py:smoke.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the config go.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Raw data folder (default: $PE_JAX_DATA_DIR).")
_DISTRIBUTED = distributed.define_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  distributed.initialize_from_flags(_DISTRIBUTED)  # before anything touches a device
  from pe_jax.runtime import enable_compilation_cache
  from pe_jax.training.train import train_and_evaluate

  enable_compilation_cache()
  config = _CONFIG.value
  if _DATA_DIR.value:
    with config.unlocked():
      config.data_dir = _DATA_DIR.value
  results = train_and_evaluate(config, _WORKDIR.value)
  for key, value in sorted(results.items()):
    print(f"{key}: {value:.4f}")


if __name__ == "__main__":
  cli.run(main, log_in=_WORKDIR, console=("pe_jax.data",))
