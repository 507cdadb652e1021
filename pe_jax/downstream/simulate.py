"""Simulated members from real labels: each engages with posts of a few topics, some held out.

A stand-in for engagement logs, which are not public: the labels of a public set (tweet_topic,
TweetEval emoji or stance) play the member's interests, so "which held-out posts does a member
representation find again" measures what feed retrieval needs.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SimulatedMember:
  """`topics`: the label ids the member follows; `history`: engaged post ids the representation is
  built from; `held_out`: engaged post ids retrieval should find again."""

  topics: tuple[int, ...]
  history: np.ndarray
  held_out: np.ndarray


def simulate_members(labels, *, num_members: int, topics_per_member: tuple[int, int] = (1, 3),
                     posts_per_member: tuple[int, int] = (6, 20), held_out_fraction: float = 0.3,
                     seed: int = 0) -> list[SimulatedMember]:
  """Members over posts with multi-hot `labels` [N, L].

  Each member follows a uniform number of topics in `topics_per_member` (inclusive), with interest
  weights drawn from a flat Dirichlet, and engages with a uniform number of posts in
  `posts_per_member`: each a topic drawn by weight, then a post of that topic not yet engaged with.
  `held_out_fraction` of the engagements (at least one, leaving at least one) are held out. Only
  topics with at least `posts_per_member[1]` posts are followed.
  """
  labels = np.asarray(labels, dtype=bool)
  if labels.ndim != 2 or labels.shape[0] == 0:
    raise ValueError(f"simulate_members: labels must be a non-empty [N, L] array, got shape {labels.shape}")
  low_t, high_t = topics_per_member
  low_p, high_p = posts_per_member
  if not 1 <= low_t <= high_t or not 2 <= low_p <= high_p:
    raise ValueError(
        f"simulate_members: need 1 <= topics {topics_per_member} and 2 <= posts {posts_per_member}, "
        "each (low, high) with low <= high")
  if not 0 < held_out_fraction < 1:
    raise ValueError(f"simulate_members: held_out_fraction must be in (0, 1), got {held_out_fraction}")
  if num_members < 1:
    raise ValueError(f"simulate_members: num_members must be >= 1, got {num_members}")
  topics = np.flatnonzero(labels.sum(axis=0) >= high_p)
  if len(topics) < high_t:
    raise ValueError(
        f"simulate_members: only {len(topics)} labels have >= {high_p} posts; members follow up to {high_t}")
  members_of = [np.flatnonzero(labels[:, t]) for t in range(labels.shape[1])]

  rng = np.random.default_rng(seed)
  members = []
  for _ in range(num_members):
    followed = rng.choice(topics, size=rng.integers(low_t, high_t + 1), replace=False)
    interest = rng.dirichlet(np.ones(len(followed)))
    engaged: list[int] = []
    for topic in rng.choice(followed, size=rng.integers(low_p, high_p + 1), p=interest):
      candidates = np.setdiff1d(members_of[topic], engaged, assume_unique=True)
      engaged.append(int(rng.choice(candidates)))
    engaged_ids = rng.permutation(engaged)
    num_held = min(len(engaged_ids) - 1, max(1, round(held_out_fraction * len(engaged_ids))))
    members.append(SimulatedMember(tuple(sorted(int(t) for t in followed)),
                                   history=np.sort(engaged_ids[num_held:]),
                                   held_out=np.sort(engaged_ids[:num_held])))
  return members
