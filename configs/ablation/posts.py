r"""Positive transfer on the post-task suite with all-MiniLM-L6-v2, on the recipe of configs/multitask.py.

  python -m pe_jax.ablate --config configs/ablation/posts.py --workdir workdirs/ablation --dry_run   # the plan
  python -m pe_jax.ablate --config configs/ablation/posts.py --workdir workdirs/ablation
  python -m pe_jax.ablate --config configs/ablation/posts.py:transfer=workdirs/ablation/transfer.json \
      --workdir workdirs/ablation          # then: all tasks under the mixture learnt from the ablation
  python -m pe_jax.ablate --config configs/ablation/posts.py:gpu --workdir ...                      # accelerator
  python -m pe_jax.ablate --config configs/ablation/posts.py:demo --workdir workdirs/ablation_demo  # ~1 h on CPU

Six labeling tasks train (topic, emoji, emotion, sentiment, hate, offensive); irony and the five
stance targets are held out of every run, so they and STS-B are zero-shot. The recipe is
multitask.recipe's as it stands (every task in every step, label-aware in-batch loss, PCA start,
distillation counted per task so the all-tasks run has the recipe's weight); this file sets only
the budget, the suite and that count.

CPU budget: every task in every step, so the all-tasks run and every single-task and leave-one-out
run are TOTAL_STEPS steps of one 16-anchor block per task: 1,008 anchors per task (>= 1,000, checked
by ablation.min_anchors). 2,500 fixed triplets per task (a cell's triplet standard error <= 0.01).
Seeds 0, 1, 2 for single and all-tasks runs; leave-one-out and the recipe variants (the rows of
what each choice is worth) on seed 0. `--dry_run` prints every run and the estimated time; on the 2
cores of the development machine, quiet, about 2.3 hours (ablation.seconds_per_text,
seconds_per_eval, fitted to the demo ablation; about 9 hours when the cores are shared at load ~12).

The "demo" switch is the same question on the main job's suite, small enough for one sitting on the 2
cores: its three trained tasks (topic, emotion, sentiment) alone and together on seeds 0, 1, 2, the
main job's held-out tasks (hate, offensive, stance_climate, 2,000 triplets each) and STS-B zero-shot;
leave-one-out and the variants stay in the plan on seed 0 (drop them with
--config.ablation.kinds="('single','all')").
"""

import ml_collections

from configs import multitask

TRAINED = ("topic", "emoji", "emotion", "sentiment", "hate", "offensive")
HELD_OUT = ("irony", "stance_abortion", "stance_atheism", "stance_climate", "stance_feminist", "stance_hillary")
# Scored after every run. tweet_topic_xl, PAWS-X and MS MARCO (configs/multitask.py's other zero-shot
# sets, 10,000 texts) are left to `pe_jax.evaluate` on the runs that matter on CPU (they would double
# the cost of each run); the gpu variant scores them everywhere.
ZERO_SHOT = ("zs_sts",)
NUM_TRIPLETS = 2_500  # per trained task; the held-out tasks' test splits are small, 300 each
HELD_OUT_TRIPLETS = 300
DEMO_HELD_OUT_TRIPLETS = 2_000  # as the main job scores them: their test splits are big enough
MIN_ANCHORS = 1_000
TOTAL_STEPS = 63  # x 16 anchors = 1,008 per task in every run
VARIANTS = ("gpu", "demo", "transfer", "other_sets")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: comma-separated switches. "gpu": the accelerator scale (all seeds everywhere, 8,000
  anchors and 5,000 triplets per task, every zero-shot set). "demo": the main job's three tasks.
  "transfer=PATH": adds the variant `transfer_mixture`, all tasks under mixture.scheme="transfer" from
  PATH (an ablation's transfer.json). "other_sets" (alone): no tasks, the zero-shot sets the CPU
  ablation leaves out, for `pe_jax.evaluate --config configs/ablation/posts.py:other_sets --model RUN`."""
  args = multitask.parse_switches(arg, VARIANTS, valued=("transfer",))  # the syntax configs share
  if "other_sets" in args:
    others = {n: z for n, z in multitask.ZERO_SHOT.items() if n not in ZERO_SHOT}
    others["zs_topic_xl"] = dict(others["zs_topic_xl"], num_triplets=1_000)
    return multitask.recipe({}, others, base="minilm-l6")
  gpu, demo = "gpu" in args, "demo" in args
  if gpu and demo:
    raise ValueError("choose one of the switches gpu, demo")
  trained, held_out = (multitask.DEMO_TASKS, multitask.DEMO_HELD_OUT) if demo else (TRAINED, HELD_OUT)
  held_out_triplets = DEMO_HELD_OUT_TRIPLETS if demo else HELD_OUT_TRIPLETS
  zero_shot = {f"zs_{name}": dict(kind="triplet", dataset=multitask.LABELING_TASKS[name][0],
                                  split=multitask.LABELING_TASKS[name][2], num_triplets=held_out_triplets)
               for name in held_out}
  zero_shot.update(multitask.ZERO_SHOT if gpu else {name: multitask.ZERO_SHOT[name] for name in ZERO_SHOT})
  c = multitask.recipe({n: multitask.LABELING_TASKS[n] for n in trained}, zero_shot, base="minilm-l6")
  # Every run distills the same pairs: a single-task run has one block a step, so pairs across
  # blocks would leave it without distillation while the all-tasks run keeps it. And every run holds
  # each of its tasks as hard: the weight counts per task, set so that the all-tasks run distills as
  # the recipe does (its weight on the step); a single-task run of one block a step would otherwise be held
  # 3-6 times more loosely per task than the all-tasks run it is compared with.
  c.distill.pairs = "all"
  c.distill.update(dict(weight=c.distill.weight * len(trained), weight_per="task"))
  c.total_steps = 500 if gpu else TOTAL_STEPS
  c.optimizer.warmup_steps = 50 if gpu else 8
  c.checkpoint_every = 100 if gpu else 21
  c.log_every = 10 if gpu else 5
  c.eval.num_triplets = 5_000 if gpu else NUM_TRIPLETS
  c.eval.knn = ml_collections.ConfigDict(dict(k=10, max_train=300, max_test=200))
  if gpu:
    c.model.encoder.dtype = "bfloat16"
  c.ablation = ablation(seeds=(0, 1, 2), leave_one_out_seeds=() if gpu else (0,),
                        variant_seeds=() if gpu else (0,), variants=recipe_variants(c))
  if demo:
    c.ablation.seconds_per_eval = 66.0  # measured: three trained and three held-out tasks, STS-B
  if gpu:
    # Not measured yet: a guess for one H200 (MiniLM-L6, bf16); the first run's ETA corrects it.
    c.ablation.update(dict(seconds_per_text=0.0005, seconds_per_eval=30.0))
  if "transfer" in args:
    # The penalty is the variant's own key, so it can be set on the command line
    # (--config.ablation.variants.transfer_mixture.mixture.transfer_penalty=0.5) without touching the
    # config every finished run was trained on.
    c.ablation.variants.transfer_mixture = ml_collections.ConfigDict(
        {"mixture": {"scheme": "transfer", "transfer_file": args["transfer"],
                     "transfer_penalty": c.mixture.transfer_penalty}})
  return c


def recipe_variants(c: ml_collections.ConfigDict) -> dict[str, dict]:
  """The rows of what each choice of the recipe is worth: each switches one choice of `c` to the
  paper's (configs/multitask.py: paper_recipe) and trains all tasks on the same anchors."""
  return {
      "one_task_per_step": {"mixture": {"tasks_per_step": 1}},
      "bce": {"tasks": {n: multitask.PAPER_TASK_LOSS for n in c.tasks}},
      "no_distill": {"distill": {"weight": 0.0}},
      "every_layer": multitask.EVERY_LAYER,
  }


def ablation(*, seeds=(0,), kinds=("single", "all", "leave_one_out", "variant"), tasks=(),
             leave_one_out_seeds=(), variant_seeds=(), variants=None) -> ml_collections.ConfigDict:
  """The ablation section: which runs (`kinds`, for `tasks`, empty = every trained task) and seeds."""
  return ml_collections.ConfigDict(dict(
      kinds=kinds, tasks=tasks, seeds=seeds,
      leave_one_out_seeds=leave_one_out_seeds,  # empty: the same seeds
      variant_seeds=variant_seeds,  # empty: the same seeds
      # name -> nested config changes, each an all-tasks run on the same anchors (plan.py)
      variants=variants or {},
      baselines=("base", "base_pca"),
      pca_fit_posts=3_000,  # training posts the PCA baseline is fitted on
      min_anchors=MIN_ANCHORS,  # per task in every single and all-tasks run, or the plan is refused
      # The plan's time estimate on the development machine (2 EPYC cores, quiet), fitted to the demo
      # ablation's 19 runs (54 minutes, docs/results.md): a training text through the encoder, forward,
      # backward and the distillation teacher, and a run's start-up (model, PCA start, compiling) plus
      # its evaluation: 66 s for the demo suite, about twice that guessed for this one's 12 tasks.
      # Shared with other jobs (load ~12) a text took 0.095 s and an evaluation 285 s.
      seconds_per_text=0.018,
      seconds_per_eval=120.0,
  ))
