import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pe_jax.training.losses import (embedding_distillation_loss, in_batch_bce_loss, in_batch_contrastive_loss,
                                    matryoshka, mean_over_pairs, pair_bce_loss, relational_distillation_loss,
                                    same_label_mask, supervised_contrastive_loss)


def unit(rng, shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def np_bce(a, b, targets, scale, bias):
  z = scale * (a.astype(np.float64) * b).sum(-1) + bias
  # log(1 + exp(-|z|)) form, so the reference itself stays finite at large |z|
  log_p = -np.logaddexp(0, -z)
  log_not_p = -np.logaddexp(0, z)
  return float(np.mean(-(targets * log_p + (1 - targets) * log_not_p)))


def np_info_nce(a, b, scale, negatives=None, same_label=None, symmetric=False):
  a, b = a.astype(np.float64), b.astype(np.float64)
  cols = b if negatives is None else np.concatenate([b, negatives])
  sims = scale * a @ cols.T

  def direction(s, blocked):
    losses = []
    for i in range(len(s)):
      keep = [j for j in range(s.shape[1]) if j == i or blocked is None or not blocked[i, j]]
      row = s[i, keep]
      losses.append(np.log(np.exp(row - row.max()).sum()) + row.max() - s[i, i])
    return np.mean(losses)

  loss = direction(sims, same_label)
  if symmetric:
    back = None if same_label is None else same_label[:, :len(a)].T
    loss = (loss + direction(sims[:, :len(a)].T, back)) / 2
  return float(loss)


def test_pair_bce_matches_numpy_with_soft_targets():
  rng = np.random.default_rng(0)
  a, b = unit(rng, (8, 16)), unit(rng, (8, 16))
  targets = np.array([1, 0, 0.2, 0.8, 1, 0, 0.5, 1], np.float32)
  got = pair_bce_loss(a, b, targets, 20.0, -10.0)
  np.testing.assert_allclose(got, np_bce(a, b, targets, 20.0, -10.0), rtol=1e-5)


def test_same_label_mask_is_any_shared_label():
  la = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
  lb = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], bool)
  want = np.array([[(x & y).any() for y in lb] for x in la])
  np.testing.assert_array_equal(same_label_mask(la, lb), want)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_negatives", [False, True])
def test_contrastive_matches_numpy(symmetric, masked, with_negatives):
  rng = np.random.default_rng(1)
  n = 6
  a, b = unit(rng, (n, 16)), unit(rng, (n, 16))
  negatives = unit(rng, (n, 16)) if with_negatives else None
  same_label = None
  if masked:
    labels = rng.integers(0, 3, size=n)
    cols = np.concatenate([labels, rng.integers(0, 3, size=n)]) if with_negatives else labels
    same_label = labels[:, None] == cols[None, :]
  got = in_batch_contrastive_loss(a, b, 20.0, negatives=negatives, same_label=same_label,
                                  symmetric=symmetric)
  want = np_info_nce(a, b, 20.0, negatives, same_label, symmetric)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_masking_changes_the_loss_and_never_drops_the_positive():
  rng = np.random.default_rng(2)
  a, b = unit(rng, (4, 8)), unit(rng, (4, 8))
  everything = np.ones((4, 4), bool)
  # With every off-diagonal column masked only the positive is left: log softmax of one logit = 0.
  assert float(in_batch_contrastive_loss(a, b, 20.0, same_label=everything)) == pytest.approx(0.0)
  assert float(in_batch_contrastive_loss(a, b, 20.0)) > 0.1


def test_extreme_scale_with_identical_vectors_stays_finite():
  v = np.tile(unit(np.random.default_rng(3), (1, 8)), (4, 1))
  mask = np.eye(4, k=1, dtype=bool)

  def total(a, b, scale, bias):
    return (pair_bce_loss(a, b, jnp.array([0, 1, 0.3, 1.0]), scale, bias)
            + in_batch_contrastive_loss(a, b, scale, same_label=mask, symmetric=True)
            + in_batch_contrastive_loss(a, b, scale, negatives=a, same_label=jnp.ones((4, 8), bool)))

  value, grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2, 3)))(v, v, 100.0, -50.0)
  assert np.isfinite(value)
  assert all(np.isfinite(g).all() for g in grads)
  np.testing.assert_allclose(pair_bce_loss(v, v, jnp.zeros(4), 100.0, 0.0), 100.0, rtol=1e-6)


def test_losses_jit_and_give_gradients_to_embeddings_and_scale():
  rng = np.random.default_rng(4)
  a, b = unit(rng, (5, 8)), unit(rng, (5, 8))
  f = jax.jit(lambda a, b, s: in_batch_contrastive_loss(a, b, s, symmetric=True))
  ga, gb, gs = jax.grad(f, argnums=(0, 1, 2))(a, b, 10.0)
  assert np.abs(ga).sum() > 0 and np.abs(gb).sum() > 0 and gs != 0
  g_bias = jax.grad(lambda bias: pair_bce_loss(a, b, jnp.ones(5), 20.0, bias))(0.0)
  assert g_bias < 0  # all targets 1: raising the bias lowers the loss


def test_matryoshka_averages_renormalised_prefixes():
  rng = np.random.default_rng(5)
  a, b, neg = unit(rng, (6, 12)), unit(rng, (6, 12)), unit(rng, (6, 12))
  dims = (3, 8, 12)

  def prefix(x, d):
    x = x[:, :d]
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  targets = rng.random(6).astype(np.float32)
  got = matryoshka(pair_bce_loss, dims)(a, b, targets, 20.0, -10.0)
  want = np.mean([np_bce(prefix(a, d), prefix(b, d), targets, 20.0, -10.0) for d in dims])
  np.testing.assert_allclose(got, want, rtol=1e-5)

  got = jax.jit(lambda a, b, n: matryoshka(in_batch_contrastive_loss, dims)(
      a, b, 20.0, negatives=n, symmetric=True))(a, b, neg)
  want = np.mean([np_info_nce(prefix(a, d), prefix(b, d), 20.0, prefix(neg, d), symmetric=True)
                  for d in dims])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_matryoshka_rejects_bad_dims():
  with pytest.raises(ValueError, match="non-empty"):
    matryoshka(pair_bce_loss, ())
  a = unit(np.random.default_rng(6), (2, 4))
  with pytest.raises(ValueError, match=r"exceed the embedding size 4"):
    matryoshka(pair_bce_loss, (2, 8))(a, a, jnp.ones(2), 1.0, 0.0)


def np_supcon(emb, related, valid, scale):
  """SupCon L_out by the definition: per anchor with positives, -mean over positives of log p(p | anchor)."""
  emb = emb.astype(np.float64)
  per_anchor = []
  for i in np.flatnonzero(valid):
    others = [j for j in np.flatnonzero(valid) if j != i]
    positives = [j for j in others if related[i, j]]
    if not positives:
      continue
    logits = scale * emb[others] @ emb[i]
    log_z = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
    per_anchor.append(np.mean([scale * emb[j] @ emb[i] - log_z for j in positives]))
  return -float(np.mean(per_anchor))


def labels_related(labels):
  return labels[:, None] == labels[None, :]


def test_supervised_contrastive_matches_its_definition():
  rng = np.random.default_rng(1)
  emb = unit(rng, (12, 8))
  labels = np.array([0, 0, 1, 1, 1, 2, 2, 0, 3, 1, 2, 0])  # label 3 has one text: an anchor without positive
  valid = np.ones(12, bool)
  valid[10:] = False  # missing texts are neither anchors, positives nor negatives
  related = labels_related(labels) & valid[:, None] & valid[None, :]
  got = supervised_contrastive_loss(emb, related, valid, 20.0)
  np.testing.assert_allclose(got, np_supcon(emb, related, valid, 20.0), rtol=1e-5)


def test_supervised_contrastive_is_low_when_labels_cluster_and_high_when_they_do_not():
  rng = np.random.default_rng(2)
  labels = np.repeat(np.arange(3), 4)
  centres = unit(rng, (3, 16))
  clustered = centres[labels] + 0.05 * rng.normal(size=(12, 16))
  clustered /= np.linalg.norm(clustered, axis=1, keepdims=True)
  valid = np.ones(12, bool)
  good = float(supervised_contrastive_loss(clustered.astype(np.float32), labels_related(labels), valid, 20.0))
  bad = float(supervised_contrastive_loss(clustered.astype(np.float32), labels_related(np.roll(labels, 1)), valid, 20.0))
  # log(3) is the floor: all the mass spread evenly over the 3 same-label texts, none elsewhere.
  assert np.log(3) <= good < np.log(3) + 0.1 < np.log(3) + 1 < bad


def test_in_batch_bce_balances_positive_and_negative_pairs():
  rng = np.random.default_rng(3)
  emb = unit(rng, (9, 8))
  labels = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1])
  related = labels_related(labels)
  valid = np.ones(9, bool)
  got = float(in_batch_bce_loss(emb, related, valid, 20.0, -5.0))
  cos = emb.astype(np.float64) @ emb.T.astype(np.float64)
  off = ~np.eye(9, dtype=bool)
  z = 20.0 * cos - 5.0
  pos = np.mean(np.logaddexp(0, -z)[related & off])
  neg = np.mean(np.logaddexp(0, z)[~related & off])
  np.testing.assert_allclose(got, (pos + neg) / 2, rtol=1e-5)


def test_relational_distillation_is_zero_for_the_teacher_and_ignores_width():
  rng = np.random.default_rng(4)
  teacher = unit(rng, (6, 32))
  rotation, _ = np.linalg.qr(rng.normal(size=(32, 32)))
  valid = np.ones(6, bool)
  same_geometry = (teacher @ rotation.T).astype(np.float32)  # other axes, same pairwise cosines
  np.testing.assert_allclose(relational_distillation_loss(same_geometry, teacher, valid), 0.0, atol=1e-10)
  student = unit(rng, (6, 4))
  off = ~np.eye(6, dtype=bool)
  expected = np.mean(((student @ student.T) - (teacher @ teacher.T))[off] ** 2)
  np.testing.assert_allclose(relational_distillation_loss(student, teacher, valid), expected, rtol=1e-5)
  valid[5] = False  # a missing text changes nothing however far it sits
  moved = student.copy()
  moved[5] = -moved[5]
  np.testing.assert_allclose(relational_distillation_loss(moved, teacher, valid),
                             relational_distillation_loss(student, teacher, valid), rtol=1e-6)


def test_the_mean_over_pairs_counts_two_different_valid_texts_inside_the_mask_only():
  gaps = np.arange(16, dtype=np.float32).reshape(4, 4)  # gaps[i, j] = 4i + j
  valid = np.array([True, True, True, False])
  assert float(mean_over_pairs(gaps, valid)) == pytest.approx(np.mean([1, 2, 4, 6, 8, 9]))
  mask = np.zeros((4, 4), bool)
  mask[0, 2] = mask[2, 0] = mask[1, 1] = mask[1, 3] = True  # a text with itself and an invalid one never count
  assert float(mean_over_pairs(gaps, valid, mask)) == pytest.approx((2 + 8) / 2)
  assert float(mean_over_pairs(gaps, valid, np.zeros((4, 4), bool))) == 0.0  # no pair: 0, not NaN


def test_embedding_distillation_is_the_mean_squared_distance_to_the_teacher_over_valid_texts():
  rng = np.random.default_rng(5)
  teacher, student = unit(rng, (6, 8)), unit(rng, (6, 8))
  valid = np.ones(6, bool)
  np.testing.assert_allclose(embedding_distillation_loss(teacher, teacher, valid), 0.0, atol=1e-12)
  expected = np.mean(2 - 2 * np.sum(student * teacher, -1))  # unit vectors: |s - t|^2 = 2 - 2 cos
  np.testing.assert_allclose(embedding_distillation_loss(student, teacher, valid), expected, rtol=1e-5)
  valid[2] = False
  np.testing.assert_allclose(embedding_distillation_loss(student, teacher, valid),
                             np.mean((2 - 2 * np.sum(student * teacher, -1))[valid]), rtol=1e-5)
  grad = jax.grad(lambda t: embedding_distillation_loss(student, t, valid))(teacher)
  assert not np.asarray(grad).any()  # the teacher is frozen
