"""Member representations from the posts a member engaged with, and retrieval with them.

A member's interests are rarely one topic, and the mean of their posts' embeddings can land between
topics, near none of them. Ward (hierarchical) clustering of the posts gives one centroid per interest,
weighted by its share of the posts; retrieval queries with every centroid and merges the results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Literal

import numpy as np
from scipy.cluster import hierarchy

from pe_jax.retrieval.exact import check_matrix
from pe_jax.retrieval.index import Index

Merge = Literal["max", "quota"]


@dataclasses.dataclass(frozen=True)
class MemberProfile:
  """Unit centroids [C, D], largest cluster first; weights [C] (share of posts, sum 1); the cluster of
  each engaged post [N]."""

  centroids: np.ndarray
  weights: np.ndarray
  assignments: np.ndarray


def _unit_rows(x: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norms > 0, norms, 1.0)


def ward_profile(post_embeddings, *, distance_threshold: float | None = None,
                 num_clusters: int | None = None) -> MemberProfile:
  """Ward clustering of the (L2-normalised) post embeddings, cut at a distance or into at most
  `num_clusters` clusters (exactly one of the two). One post makes one cluster; no post is an error."""
  if (distance_threshold is None) == (num_clusters is None):
    raise ValueError("ward_profile: give exactly one of distance_threshold and num_clusters")
  if num_clusters is not None and num_clusters < 1:
    raise ValueError(f"ward_profile: num_clusters must be >= 1, got {num_clusters}")
  if distance_threshold is not None and distance_threshold < 0:
    raise ValueError(f"ward_profile: distance_threshold must be >= 0, got {distance_threshold}")
  posts = check_matrix(post_embeddings, what="ward_profile: post embeddings").astype(np.float64)
  if len(posts) == 0:
    raise ValueError("ward_profile: the engagement history is empty; a member needs at least one post")
  posts = _unit_rows(posts)
  if len(posts) == 1 or num_clusters == 1:
    labels = np.zeros(len(posts), dtype=np.int64)
  else:
    tree = hierarchy.linkage(posts, method="ward")
    if num_clusters is not None:
      labels = hierarchy.fcluster(tree, num_clusters, criterion="maxclust") - 1
    else:
      labels = hierarchy.fcluster(tree, distance_threshold, criterion="distance") - 1
  counts = np.bincount(labels)
  order = np.argsort(-counts, kind="stable")  # largest cluster first
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  centroids = np.stack([posts[labels == c].mean(axis=0) for c in order])
  return MemberProfile(centroids=_unit_rows(centroids).astype(np.float32),
                       weights=(counts[order] / len(posts)).astype(np.float32), assignments=rank[labels])


def mean_profile(post_embeddings) -> MemberProfile:
  """The single-vector baseline: one centroid, the normalised mean of the posts."""
  return ward_profile(post_embeddings, num_clusters=1)


def _quotas(weights: np.ndarray, k: int) -> np.ndarray:
  """k slots split by weight, largest remainders first."""
  exact = weights * k
  quotas = np.floor(exact).astype(np.int64)
  quotas[np.argsort(-(exact - quotas), kind="stable")[:k - quotas.sum()]] += 1
  return quotas


def _merge(scores: np.ndarray, ids: np.ndarray, weights: np.ndarray, k: int, skip: Collection[int],
           merge: Merge) -> list[tuple[float, int]]:
  """One member's k (score, id) results from per-centroid lists [C, K], best first."""
  best: dict[int, float] = {}  # id -> best score over centroids
  for row_scores, row_ids in zip(scores, ids):
    for s, i in zip(row_scores, row_ids):
      if i >= 0 and i not in skip and s > best.get(int(i), -np.inf):
        best[int(i)] = float(s)
  if merge == "max":
    chosen = sorted(best, key=lambda i: (-best[i], i))[:k]
  else:
    chosen, taken = [], set()
    for quota, row_ids in zip(_quotas(weights, k), ids):
      fresh = [int(i) for i in row_ids if int(i) in best and int(i) not in taken][:quota]
      chosen += fresh
      taken.update(fresh)
    # Overlapping centroid lists leave slots free: fill them by best score.
    chosen += [i for i in sorted(best, key=lambda i: (-best[i], i)) if i not in taken][:k - len(chosen)]
  return sorted(((best[i], i) for i in chosen), key=lambda t: (-t[0], t[1]))


def search_members(index: Index, profiles: Sequence[MemberProfile], k: int, *,
                   exclude: Sequence[Collection[int]] | None = None,
                   merge: Merge = "max") -> tuple[np.ndarray, np.ndarray]:
  """Multi-centroid retrieval for each member: (scores [M, k], ids [M, k]), best first.

  Every centroid of every member is one query. `exclude[m]` holds ids member m must not get back
  (e.g. the posts already engaged with). Merging: "max" ranks the union of the centroids' results by
  their best score; "quota" gives each centroid a share of the k slots by its weight (so a small
  interest is not crowded out), fills the rest by best score. A member with fewer than k eligible
  ids is padded with id -1, score -inf.
  """
  if merge not in ("max", "quota"):
    raise ValueError(f"search_members: merge must be 'max' or 'quota', got {merge!r}")
  if k < 1:
    raise ValueError(f"search_members: k must be >= 1, got {k}")
  exclude = [set() for _ in profiles] if exclude is None else [set(map(int, e)) for e in exclude]
  if len(exclude) != len(profiles):
    raise ValueError(f"search_members: {len(exclude)} exclude sets for {len(profiles)} members")
  out_scores = np.full((len(profiles), k), -np.inf, dtype=np.float32)
  out_ids = np.full((len(profiles), k), -1, dtype=np.int64)
  if not profiles:
    return out_scores, out_ids
  queries = np.concatenate([p.centroids for p in profiles])
  # Each centroid asks for enough results that k survive removing the member's excluded ids.
  scores, ids = index.search(queries, k + max(len(e) for e in exclude))
  start = 0
  for m, (profile, skip) in enumerate(zip(profiles, exclude)):
    rows = slice(start, start + len(profile.centroids))
    start = rows.stop
    for j, (s, i) in enumerate(_merge(scores[rows], ids[rows], profile.weights, k, skip, merge)):
      out_scores[m, j], out_ids[m, j] = s, i
  return out_scores, out_ids
