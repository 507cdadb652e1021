"""The recipe's guard: a short real run on all-MiniLM-L6-v2 must beat the untuned base on the tasks it
trains and keep STS-B, on the same triplets. A change that quietly undoes the recipe (the loss, the
balanced blocks, the PCA start, the distillation) fails here. Slow: a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest

from pe_jax.evaluation import suite as suite_lib
from pe_jax.models.loading import load_model
from pe_jax.serving.embedder import Embedder
from pe_jax.training.train import train_and_evaluate

TRAINED = ("topic", "emotion")
HELD_OUT = ("stance_climate",)
NUM_TRIPLETS = 1_000  # s.e. of one task ~0.015, of the two-task mean ~0.011
# Margins (docs/results.md, "The CI guard on this recipe"): about half the gain such a run shows (+0.145
# with the frozen trunk, +0.148 before it; +0.058 at the old temperature 0.05, which this margin catches).
# STS-B: the bound, 0.02 below the 384-d base; this run ends 0.015 below it (0.011 before the trunk
# froze), the 128-d PCA cut it starts from 0.010 below, and a collapsing recipe (the old BCE head) fell
# 0.05-0.08 below its start.
MIN_TRAINED_GAIN = 0.07
MAX_STS_LOSS = 0.02


@pytest.mark.slow
def test_a_short_real_run_beats_the_base_and_keeps_sts(base_config, shared_data_dir, tfds_dir, compilation_cache,
                                                      tmp_path):
  config = base_config("demo")
  config.data_dir, config.tfds_dir = str(shared_data_dir), str(tfds_dir)
  for name in list(config.tasks):
    if name not in TRAINED + HELD_OUT:
      del config.tasks[name]
  for name in TRAINED:
    config.tasks[name].weight = 1.0
  for name in HELD_OUT:
    config.tasks[name].weight = 0.0
  config.total_steps = 40
  config.eval_every = 40
  config.checkpoint_every = 40
  config.eval.num_triplets = NUM_TRIPLETS
  trained = train_and_evaluate(config, tmp_path / "run")

  model, tokenizer, prefix = load_model(config.model.base)
  suite = suite_lib.build_suite(config, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
  base = suite_lib.run_suite(suite, Embedder(model, tokenizer, prefix=prefix), tasks=list(config.tasks))

  gain = np.mean([trained[f"{t}/triplet_acc"] - base[f"{t}/triplet_acc"] for t in TRAINED])
  report = {k: (round(base[k], 3), round(trained[k], 3)) for k in sorted(trained) if k in base}
  print(f"trained-task gain {gain:+.3f}; (base, trained): {report}")  # pytest -s shows it on a pass too
  assert gain >= MIN_TRAINED_GAIN, f"trained-task gain {gain:+.3f} < {MIN_TRAINED_GAIN}: {report}"
  assert trained["zs_sts/sts_spearman"] >= base["zs_sts/sts_spearman"] - MAX_STS_LOSS, report
