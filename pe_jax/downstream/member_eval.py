"""How well member representations serve feed retrieval and ranking of simulated members.

- Retrieval: build each member's profile from their history, retrieve k posts (history excluded),
  score the held-out engagements with the evaluators' ranking metrics (recall@k, nDCG@10, MRR@10).
- Ranking: a simple classifier predicts engagement (held-out posts vs random unseen posts) from
  embedding-free features, then from the same plus member-post similarities; ROC-AUC of each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from sklearn import ensemble, linear_model, metrics as sk_metrics, pipeline, preprocessing

from pe_jax.downstream.simulate import SimulatedMember
from pe_jax.evaluation import metrics
from pe_jax.retrieval.index import Index
from pe_jax.retrieval.members import Merge, MemberProfile, mean_profile, search_members

Profile = Callable[[np.ndarray], MemberProfile]


def member_retrieval_metrics(index: Index, post_embeddings: np.ndarray, members: Sequence[SimulatedMember], *,
                             profile: Profile, ks: Sequence[int] = (10, 50, 100), merge: Merge = "max",
                             labels: np.ndarray | None = None) -> dict[str, float]:
  """Ranking metrics of the held-out posts, retrieved from `index` (which holds `post_embeddings`) with
  `profile(history embeddings)`, and "centroids_per_member" (mean).

  With the posts' multi-hot `labels` [N, L], also per k: "interest_precision@k", the share of the
  k posts carrying a label the member follows, and "interest_coverage@k", the share of the member's
  labels found among them (what one mean vector between two interests loses).
  """
  if not members:
    raise ValueError("member_retrieval_metrics: no members")
  profiles = [profile(post_embeddings[m.history]) for m in members]
  _, ids = search_members(index, profiles, max(ks), exclude=[m.history for m in members], merge=merge)
  result = metrics.ranking_metrics(ids, [{int(i): 1 for i in m.held_out} for m in members], ks,
                                   metric="member_retrieval_metrics")
  if labels is not None:
    labels = np.asarray(labels, dtype=bool)
    if labels.ndim != 2 or len(labels) != len(post_embeddings):
      raise ValueError(f"member_retrieval_metrics: labels must be [{len(post_embeddings)}, L], got {labels.shape}")
    for k in ks:
      precision, coverage = [], []
      for m, row in zip(members, ids):
        found = labels[row[:k][row[:k] >= 0]][:, list(m.topics)]
        precision.append(found.any(axis=1).sum() / k)
        coverage.append(found.any(axis=0).mean())
      result[f"interest_precision@{k}"] = float(np.mean(precision))
      result[f"interest_coverage@{k}"] = float(np.mean(coverage))
  result["centroids_per_member"] = float(np.mean([len(p.centroids) for p in profiles]))
  return result


def _candidates(members: Sequence[SimulatedMember], num_posts: int, negatives_per_positive: int,
                rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
  """Per member: (candidate post ids, engaged 0/1): the held-out posts and random posts never engaged."""
  out = []
  for m in members:
    seen = np.union1d(m.history, m.held_out)
    pool = np.setdiff1d(np.arange(num_posts), seen, assume_unique=True)
    negatives = rng.choice(pool, size=min(len(pool), negatives_per_positive * len(m.held_out)), replace=False)
    out.append((np.concatenate([m.held_out, negatives]),
                np.concatenate([np.ones(len(m.held_out)), np.zeros(len(negatives))])))
  return out


def _features(post_embeddings: np.ndarray, members: Sequence[SimulatedMember], candidates, popularity: np.ndarray,
              post_features: np.ndarray, profile: Profile | None) -> np.ndarray:
  """Rows per (member, candidate): log popularity, log history size, post features; with a profile, also
  cosine to the member's mean vector, the best centroid cosine and that centroid's weight."""
  unit = post_embeddings / np.maximum(np.linalg.norm(post_embeddings, axis=1, keepdims=True), 1e-12)
  rows = []
  for m, (posts, _) in zip(members, candidates):
    base = [np.log1p(popularity[posts]), np.full(len(posts), np.log1p(len(m.history))), *post_features[posts].T]
    if profile is not None:
      mean_cos = unit[posts] @ mean_profile(unit[m.history]).centroids[0]
      clusters = profile(unit[m.history])
      sims = unit[posts] @ clusters.centroids.T
      best = sims.argmax(axis=1)
      base += [mean_cos, sims.max(axis=1), clusters.weights[best]]
    rows.append(np.stack(base, axis=1))
  return np.concatenate(rows)


def engagement_ranking_auc(post_embeddings: np.ndarray, members: Sequence[SimulatedMember], *, profile: Profile,
                           post_features: np.ndarray | None = None, negatives_per_positive: int = 4,
                           model: Literal["logistic", "gbdt"] = "logistic", seed: int = 0) -> dict[str, float]:
  """ROC-AUC of an engagement ranker without and with the embedding, on held-out members.

  The first half of the members trains the ranker, the second half tests it. Popularity counts
  engagements in every member's history (held-out posts are never counted). `post_features` [N, F]
  adds embedding-free post features (e.g. log text length).
  """
  if len(members) < 4:
    raise ValueError(f"engagement_ranking_auc: needs at least 4 members (2 to train, 2 to test), got {len(members)}")
  if model not in ("logistic", "gbdt"):
    raise ValueError(f"engagement_ranking_auc: model must be 'logistic' or 'gbdt', got {model!r}")
  num_posts = len(post_embeddings)
  post_features = np.zeros((num_posts, 0)) if post_features is None else np.asarray(post_features, np.float64)
  if post_features.ndim != 2 or len(post_features) != num_posts:
    raise ValueError(
        f"engagement_ranking_auc: post_features must be [{num_posts}, F], got shape {post_features.shape}")
  rng = np.random.default_rng(seed)
  popularity = np.bincount(np.concatenate([m.history for m in members]), minlength=num_posts).astype(np.float64)
  half = len(members) // 2
  splits = {"train": members[:half], "test": members[half:]}
  candidates = {name: _candidates(ms, num_posts, negatives_per_positive, rng) for name, ms in splits.items()}
  targets = {name: np.concatenate([y for _, y in c]) for name, c in candidates.items()}
  result = {}
  for name, member_profile in (("without_embedding", None), ("with_embedding", profile)):
    x = {split: _features(post_embeddings, splits[split], candidates[split], popularity, post_features,
                          member_profile) for split in splits}
    if model == "logistic":
      ranker = pipeline.make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=1000))
    else:
      ranker = ensemble.HistGradientBoostingClassifier(max_iter=200, random_state=seed)
    ranker.fit(x["train"], targets["train"])
    result[f"auc_{name}"] = float(sk_metrics.roc_auc_score(targets["test"], ranker.predict_proba(x["test"])[:, 1]))
  result["num_test_candidates"] = float(len(targets["test"]))
  return result
