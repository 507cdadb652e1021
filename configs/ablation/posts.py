r"""Positive transfer on the post-task suite with all-MiniLM-L6-v2, at a budget this CPU can afford.

  python -m pe_jax.ablate --config configs/ablation/posts.py --workdir workdirs/ablation

Six labeling tasks train (topic, emoji, emotion, sentiment, hate, offensive); irony and the five
stance targets are held out of every run, so they and the pair/STS/retrieval sets are zero-shot.
Uniform mixing gives every task the same budget: all tasks 72 steps x 16 pairs = 12 steps (192
anchors) per task, so each single-task run is 12 steps and each leave-one-out run 60. 13 runs, 504
steps, 15 evaluations (300 triplets per task): about 1.5 hours on 2 busy CPU cores. Scale
`total_steps`, `eval.num_triplets` and `ablation.seeds` on an accelerator.
"""

import ml_collections

from configs import multitask

TRAINED = ("topic", "emoji", "emotion", "sentiment", "hate", "offensive")
HELD_OUT = ("irony", "stance_abortion", "stance_atheism", "stance_climate", "stance_feminist", "stance_hillary")
# Scored after every run. tweet_topic_xl, PAWS-X and MS MARCO (configs/multitask.py's other zero-shot
# sets, 10,000 texts) are left to `pe_jax.evaluate` on the runs that matter: on this CPU they would
# double the cost of each run.
ZERO_SHOT = ("zs_sts",)
NUM_TRIPLETS = 300


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: None (the ablation) or "other_sets" (no tasks: the zero-shot sets the ablation leaves out,
  for `pe_jax.evaluate --config configs/ablation/posts.py:other_sets --model RUN`)."""
  if arg not in (None, "", "other_sets"):
    raise ValueError(f"unknown variant {arg!r}; known: other_sets")
  if arg == "other_sets":
    others = {n: z for n, z in multitask.ZERO_SHOT.items() if n not in ZERO_SHOT}
    others["zs_topic_xl"] = dict(others["zs_topic_xl"], num_triplets=1_000)
    return multitask.recipe({}, others, base="minilm-l6")
  zero_shot = {f"zs_{name}": dict(kind="triplet", dataset=multitask.LABELING_TASKS[name][0],
                                  split=multitask.LABELING_TASKS[name][2], num_triplets=NUM_TRIPLETS)
               for name in HELD_OUT}
  zero_shot.update({name: multitask.ZERO_SHOT[name] for name in ZERO_SHOT})
  c = multitask.recipe({n: multitask.LABELING_TASKS[n] for n in TRAINED}, zero_shot, base="minilm-l6")
  c.mixture.scheme = "uniform"
  c.mixture.tasks_per_step = 1  # the planner's matched budgets count one task block per shard and step
  c.distill.pairs = "all"  # one block per step: no pair across blocks to hold
  c.batch_size = 16
  c.total_steps = 72
  c.optimizer.warmup_steps = 8
  c.checkpoint_every = 12
  c.log_every = 5
  c.eval.num_triplets = NUM_TRIPLETS
  c.eval.knn = ml_collections.ConfigDict(dict(k=10, max_train=300, max_test=200))
  c.ablation = ablation(seeds=(0,))
  return c


def ablation(*, seeds=(0,), kinds=("single", "all", "leave_one_out"), tasks=()) -> ml_collections.ConfigDict:
  """The ablation section: which runs (`kinds`, for `tasks`, empty = every trained task) and seeds."""
  return ml_collections.ConfigDict(dict(
      kinds=kinds, tasks=tasks, seeds=seeds,
      leave_one_out_seeds=(),  # empty: the same seeds; (0,) when leave-one-out on every seed costs too much
      baselines=("base", "base_pca"),
      pca_fit_posts=3_000,  # training posts the PCA baseline is fitted on
  ))
