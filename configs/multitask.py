r"""The multi-task post-embedding recipe on all-MiniLM-L6-v2 over the post-task suite.

  python -m pe_jax.train --config configs/multitask.py --workdir workdirs/multitask
  python -m pe_jax.train --config configs/multitask.py:smoke --workdir /tmp/smoke      # < 1 min on CPU
  python -m pe_jax.train --config configs/multitask.py:demo --workdir workdirs/demo    # a few min on CPU
  python -m pe_jax.train --config configs/multitask.py --config.total_steps=300 --workdir ...

Tasks stand in for LinkedIn's (see docs/PAPER.md): topic ~ Interest, emoji ~ Hashtag, stance ~
Storyline, plus sentiment-style labels. Each labeling task becomes (anchor, positive sharing a label,
negative sharing none) and trains the paper's BCE on scaled cosine with its own head. Zero-shot
evaluations use sets no task trains on.
"""

import ml_collections

# name -> (dataset, train split, eval split). Sentiment trains on val: its train text is not staged,
# and xlm_t_umsab/english (carved out of it) stays out of training — see MANIFEST.md.
LABELING_TASKS = {
    "topic": ("tweet_topic_single", "train_2020", "test_2021"),
    "emoji": ("tweeteval/emoji", "train", "test"),
    "emotion": ("tweeteval/emotion", "train", "test"),
    "sentiment": ("tweeteval/sentiment", "val", "test"),
    "irony": ("tweeteval/irony", "train", "test"),
    "hate": ("tweeteval/hate", "train", "test"),
    "offensive": ("tweeteval/offensive", "train", "test"),
    "stance_abortion": ("tweeteval/stance_abortion", "train", "test"),
    "stance_atheism": ("tweeteval/stance_atheism", "train", "test"),
    "stance_climate": ("tweeteval/stance_climate", "train", "test"),
    "stance_feminist": ("tweeteval/stance_feminist", "train", "test"),
    "stance_hillary": ("tweeteval/stance_hillary", "train", "test"),
}

# Evaluated every time, trained on by no task here: the zero-shot columns.
ZERO_SHOT = {
    "zs_topic_xl": dict(kind="triplet", dataset="tweet_topic_xl/en", split="test"),
    "zs_sts": dict(kind="sts", dataset="stsb_multi_mt/en", split="test"),
    "zs_paws": dict(kind="pair_auc", dataset="pawsx/en", split="dev"),
    "zs_msmarco": dict(kind="retrieval", dataset="retrieval_subsets/msmarco", split="test"),
}

SMOKE_TASKS = ("emotion", "irony", "stance_climate")
DEMO_TASKS = ("emotion", "irony", "hate", "stance_climate")
VARIANTS = ("smoke", "demo")


def _parse(arg: str | None) -> dict[str, str]:
  out = {}
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    out[key] = value or "true"
  return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: "smoke" (tiny random model, 3 real tasks, 30 steps) or "demo" (real MiniLM, 4 tasks, 120 steps)."""
  args = _parse(arg)
  for key, value in args.items():
    if key not in VARIANTS:
      raise ValueError(f"unknown config switch {key!r}={value!r}; known: {', '.join(VARIANTS)}")
  smoke, demo = "smoke" in args, "demo" in args
  names = SMOKE_TASKS if smoke else DEMO_TASKS if demo else tuple(LABELING_TASKS)
  zero_shot = {} if smoke else {"zs_sts": ZERO_SHOT["zs_sts"]} if demo else ZERO_SHOT
  return recipe({n: LABELING_TASKS[n] for n in names}, zero_shot, base="minilm-l6", smoke=smoke, demo=demo)


def recipe(tasks: dict[str, tuple[str, str, str]], zero_shot: dict, *, base: str, smoke: bool = False,
           demo: bool = False) -> ml_collections.ConfigDict:
  """The shared recipe: `tasks` maps name -> (dataset, train split, eval split). Other configs call it."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data_dir = ml_collections.config_dict.placeholder(str)  # raw data folder; None -> $PE_JAX_DATA_DIR
  c.tfds_dir = ml_collections.config_dict.placeholder(str)  # prepared datasets; None -> $PE_JAX_TFDS_DIR or ~/.cache/pe_jax/tfds

  c.model = ml_collections.ConfigDict()
  c.model.base = base  # alias, Hugging Face folder or hub id; gives the tokenizer and weights
  c.model.random_init = smoke  # True: same tokenizer, fresh tiny weights (tests, smoke runs)
  c.model.encoder = ml_collections.ConfigDict(dict(
      projection_dim=50,  # the paper's compact post embedding
      pooling="mean",
      max_seq_length=128,  # tweets are short; 99.9% fit in 128 MiniLM tokens
      dtype="float32",  # "bfloat16" on accelerators
  ))
  if smoke:
    c.model.encoder.update(dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                                max_seq_length=64))

  c.tasks = ml_collections.ConfigDict()
  for name, (dataset, split, eval_split) in tasks.items():
    c.tasks[name] = ml_collections.ConfigDict(dict(
        dataset=dataset, split=split, eval_split=eval_split,
        loss="bce",  # "bce" (paper) or "contrastive" (in-batch negatives, label-aware masking)
        weight=1.0,  # multiplies the mixture weight; 0 drops the task (single-task / leave-one-out)
        head=dict(scale_init=20.0, bias_init=-10.0),
        matryoshka_dims=(),
    ))

  c.mixture = ml_collections.ConfigDict(dict(
      scheme="temperature",  # proportional | temperature | uniform | explicit
      temperature=2.0,
      cap=20_000,  # sizes above the cap count as the cap
      per_shard=True,  # the paper: each data-parallel shard draws a different task each step
  ))

  c.batch_size = 8 if smoke else 16 if demo else 32  # pairs per data-parallel shard per step
  c.total_steps = 30 if smoke else 120 if demo else 2_000
  c.grad_accum_steps = 1
  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-3 if smoke else 1e-4, warmup_steps=3 if smoke else 50, decay="cosine",
      projection_lr_multiplier=1.0 if smoke else 10.0,  # new weights learn faster than pretrained ones
      head_lr_multiplier=1.0 if smoke else 100.0,
      final_lr_fraction=0.1, weight_decay=0.01, grad_clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-8,
  ))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1: the devices left over

  c.log_every = 1 if smoke else 5 if demo else 10
  c.checkpoint_every = 10 if smoke else 40 if demo else 250
  c.eval_every = 15 if smoke else 120 if demo else 500
  c.keep_checkpoints = 2
  c.best_metric = "triplet_acc/mean"  # checkpoints ranked by this (higher is better)
  c.eval = ml_collections.ConfigDict(dict(
      num_triplets=200 if smoke else 1_000 if demo else 2_000,  # per task, from its eval split
      seed=0,  # draws the triplets; fixed, so runs with other seeds are scored on the same ones
      zero_shot=zero_shot,
  ))
  return c
