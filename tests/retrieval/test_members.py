"""Ward member profiles, multi-centroid retrieval, member simulation and the downstream evaluations."""

from __future__ import annotations

import numpy as np
import pytest

from pe_jax.downstream.member_eval import engagement_ranking_auc, member_retrieval_metrics
from pe_jax.downstream.simulate import simulate_members
from pe_jax.retrieval.index import ExactIndex
from pe_jax.retrieval.members import mean_profile, search_members, ward_profile

DIM = 16


def _topic_posts(num_topics: int, per_topic: int, noise: float = 0.1, seed: int = 0):
  """Posts scattered tightly around orthogonal topic directions: (embeddings, one-hot labels)."""
  rng = np.random.default_rng(seed)
  topic = np.repeat(np.arange(num_topics), per_topic)
  emb = np.eye(DIM, dtype=np.float32)[topic] + noise * rng.normal(size=(len(topic), DIM)).astype(np.float32)
  return emb, np.eye(num_topics, dtype=bool)[topic]


def test_ward_finds_the_topics_of_a_two_topic_history():
  emb, _ = _topic_posts(2, 10)
  history = emb[[0, 1, 2, 3, 4, 5, 10, 11]]  # 6 posts of topic 0, 2 of topic 1
  for profile in (ward_profile(history, distance_threshold=1.0), ward_profile(history, num_clusters=2)):
    assert profile.centroids.shape == (2, DIM)
    np.testing.assert_allclose(profile.weights, [0.75, 0.25])
    np.testing.assert_array_equal(profile.assignments, [0] * 6 + [1] * 2)
    np.testing.assert_allclose(np.linalg.norm(profile.centroids, axis=1), 1.0, rtol=1e-6)
    assert profile.centroids[0].argmax() == 0 and profile.centroids[1].argmax() == 1


def test_mean_profile_is_the_normalised_mean():
  emb, _ = _topic_posts(2, 3)
  profile = mean_profile(emb)
  unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  expected = unit.mean(axis=0) / np.linalg.norm(unit.mean(axis=0))
  np.testing.assert_allclose(profile.centroids[0], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(profile.weights, [1.0])


def test_one_post_is_one_cluster_and_a_cut_above_the_posts_is_one_too():
  emb, _ = _topic_posts(3, 2)
  single = ward_profile(emb[:1], num_clusters=5)
  assert single.centroids.shape == (1, DIM) and single.weights.tolist() == [1.0]
  assert len(ward_profile(emb, num_clusters=100).centroids) == 6  # at most one cluster a post
  assert len(ward_profile(emb, distance_threshold=1e6).centroids) == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of"),
    (dict(num_clusters=2, distance_threshold=1.0), "exactly one of"),
    (dict(num_clusters=0), "num_clusters must be >= 1"),
    (dict(distance_threshold=-1.0), "distance_threshold must be >= 0"),
])
def test_ward_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ward_profile(np.ones((3, DIM)), **kwargs)


def test_empty_history_is_an_error():
  with pytest.raises(ValueError, match="engagement history is empty"):
    ward_profile(np.zeros((0, DIM)), num_clusters=2)
  with pytest.raises(ValueError, match="engagement history is empty"):
    mean_profile(np.zeros((0, DIM)))


def test_multi_centroid_retrieval_covers_both_interests_where_the_mean_does_not():
  emb, _ = _topic_posts(3, 20, noise=0.1)
  index = ExactIndex(DIM)
  index.add(emb)
  history = emb[[0, 1, 2, 20, 21]]  # interests: topic 0 (3 posts), topic 1 (2 posts)
  ward = ward_profile(history, distance_threshold=1.0)
  assert len(ward.centroids) == 2
  _, ids = search_members(index, [ward], 10, merge="quota", exclude=[[0, 1, 2, 20, 21]])
  topics = ids[0] // 20
  assert (topics == 0).sum() == 6 and (topics == 1).sum() == 4  # slots follow the 3:2 weights
  assert not set(ids[0]) & {0, 1, 2, 20, 21}
  _, ids = search_members(index, [ward], 10, merge="max")
  assert set(ids[0] // 20) <= {0, 1}
  scores, ids = search_members(index, [ward], 10, merge="max")
  assert (np.diff(scores[0]) <= 0).all() and len(set(ids[0])) == 10


def test_search_members_pads_when_the_corpus_runs_out():
  emb, _ = _topic_posts(2, 3)
  index = ExactIndex(DIM)
  index.add(emb)
  profiles = [ward_profile(emb[:2], num_clusters=2), mean_profile(emb[3:4])]
  scores, ids = search_members(index, profiles, 5, exclude=[[0, 1], [3]])
  for row, excluded in zip(ids, ([0, 1], [3])):
    assert sorted(row[row >= 0]) == sorted(set(range(6)) - set(excluded))
  assert ids[0, 4] == -1 and np.isneginf(scores[0, 4]) and np.isfinite(scores[1]).all()
  assert search_members(index, [], 3)[1].shape == (0, 3)


def test_search_members_wrong_dimension_and_bad_merge():
  emb, _ = _topic_posts(2, 3)
  index = ExactIndex(DIM)
  index.add(emb)
  with pytest.raises(ValueError, match="dimension 50, expected 16"):
    search_members(index, [mean_profile(np.ones((2, 50)))], 3)
  with pytest.raises(ValueError, match="merge must be"):
    search_members(index, [mean_profile(emb)], 3, merge="sum")
  with pytest.raises(ValueError, match="2 exclude sets for 1 members"):
    search_members(index, [mean_profile(emb)], 3, exclude=[[], []])


def test_simulated_members_follow_their_topics_and_hold_out_posts():
  _, labels = _topic_posts(4, 30)
  members = simulate_members(labels, num_members=50, posts_per_member=(4, 12), seed=3)
  again = simulate_members(labels, num_members=50, posts_per_member=(4, 12), seed=3)
  assert all((a.history == b.history).all() and (a.held_out == b.held_out).all() for a, b in zip(members, again))
  for m in members:
    engaged = np.concatenate([m.history, m.held_out])
    assert 1 <= len(m.topics) <= 3 and 4 <= len(engaged) <= 12
    assert len(set(engaged)) == len(engaged) and len(m.history) >= 1 and len(m.held_out) >= 1
    assert set(labels[engaged].argmax(axis=1)) <= set(m.topics)
  assert {len(m.topics) for m in members} == {1, 2, 3}


def test_simulate_members_bad_input():
  _, labels = _topic_posts(2, 5)
  with pytest.raises(ValueError, match="only 0 labels have >= 20 posts"):
    simulate_members(labels, num_members=3)
  with pytest.raises(ValueError, match="held_out_fraction"):
    simulate_members(labels, num_members=3, held_out_fraction=1.0)
  with pytest.raises(ValueError, match="non-empty"):
    simulate_members(np.zeros((0, 3)), num_members=3)


def test_topic_embeddings_retrieve_and_rank_better_than_noise():
  emb, labels = _topic_posts(4, 40, noise=0.25)
  members = simulate_members(labels, num_members=40, posts_per_member=(6, 12), seed=0)
  noise = np.random.default_rng(1).normal(size=emb.shape).astype(np.float32)
  recall = {}
  for name, e in (("topic", emb), ("noise", noise)):
    index = ExactIndex(DIM)
    index.add(e)
    recall[name] = member_retrieval_metrics(index, e, members, profile=mean_profile, ks=(40,), labels=labels)
  assert recall["topic"]["recall@40"] > recall["noise"]["recall@40"] + 0.2
  assert recall["topic"]["interest_precision@40"] > 0.9 > 0.6 > recall["noise"]["interest_precision@40"]
  assert recall["topic"]["interest_coverage@40"] > 0.8
  auc = engagement_ranking_auc(emb, members, profile=lambda x: ward_profile(x, distance_threshold=1.0))
  assert auc["auc_with_embedding"] > auc["auc_without_embedding"] + 0.2
  with pytest.raises(ValueError, match="at least 4 members"):
    engagement_ranking_auc(emb, members[:3], profile=mean_profile)
