r"""Collapse detector: the mean cosine of random post pairs under each model.

  python scripts/mean_cosine.py minilm-l6 workdirs/demo workdirs/cpu

A recipe that pulls every post together (the old BCE head did: ~0.15 -> ~0.8) shows here long before
it shows in a triplet accuracy. Posts: the first --num_posts lines of TweetEval emoji test (no task's
training split), under $PE_JAX_DATA_DIR.
"""

from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np

from pe_jax.serving.embedder import Embedder


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("models", nargs="+", help="aliases, Hugging Face folders or training workdirs")
  p.add_argument("--num_posts", type=int, default=600)
  args = p.parse_args()
  data = pathlib.Path(os.environ.get("PE_JAX_DATA_DIR", "../shared/data"))
  posts = (data / "tweeteval" / "emoji" / "test_text.txt").read_text(encoding="utf-8").splitlines()[: args.num_posts]
  off_diagonal = ~np.eye(len(posts), dtype=bool)
  for spec in args.models:
    emb = Embedder.from_pretrained(spec)(posts)
    cos = (emb @ emb.T)[off_diagonal]
    print(f"{spec}: mean cosine of random post pairs {cos.mean():.3f} (sd {cos.std():.3f}, {len(posts)} posts)")


if __name__ == "__main__":
  main()
