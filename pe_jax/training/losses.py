"""Pair and contrastive losses on L2-normalised embeddings [B, D]; each returns a scalar mean.

Similarities use full float32 precision: at a scale of 20-100 the default reduced-precision matmul
of accelerators moves logits by whole units.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

_HIGHEST = jax.lax.Precision.HIGHEST


def pair_bce_loss(a: jax.Array, b: jax.Array, targets: jax.Array, scale: jax.Array,
                  bias: jax.Array) -> jax.Array:
  """Binary cross-entropy of sigmoid(scale * cos(a_i, b_i) + bias) against targets in [0, 1]."""
  cos = jnp.einsum("bd,bd->b", a, b, precision=_HIGHEST)
  return optax.sigmoid_binary_cross_entropy(scale * cos + bias, targets).mean()


def same_label_mask(label_rows_a: jax.Array, label_rows_b: jax.Array) -> jax.Array:
  """bool [Ba, Bb]: rows i and j share at least one label (multi-hot rows)."""
  overlap = jnp.einsum("il,jl->ij", jnp.asarray(label_rows_a, jnp.float32),
                       jnp.asarray(label_rows_b, jnp.float32), precision=_HIGHEST)
  return overlap > 0


def in_batch_contrastive_loss(a: jax.Array, b: jax.Array, scale: jax.Array, *,
                              negatives: jax.Array | None = None,
                              same_label: jax.Array | None = None,
                              symmetric: bool = False) -> jax.Array:
  """InfoNCE (multiple-negatives ranking): row i's positive is b[i], the other columns negatives.

  Columns are b, then the explicit `negatives` [B, D] if given. `same_label` (bool [B, columns])
  marks columns that must not serve as row i's negatives (false negatives of a labeling task);
  column i, the positive, is always kept. `symmetric` averages in the b -> a direction over b's
  columns only (negatives belong to the a side).
  """
  n = a.shape[0]
  columns = b if negatives is None else jnp.concatenate([b, negatives], axis=0)
  logits = scale * jnp.einsum("id,jd->ij", a, columns, precision=_HIGHEST)
  drop = None if same_label is None else same_label & ~jnp.eye(n, columns.shape[0], dtype=bool)
  loss = _positive_nll(logits, drop)
  if symmetric:
    drop_ba = None if drop is None else drop[:, :n].T
    loss = (loss + _positive_nll(logits[:, :n].T, drop_ba)) / 2
  return loss


def _positive_nll(logits: jax.Array, drop: jax.Array | None) -> jax.Array:
  """Mean -log softmax of the diagonal, ignoring `drop`ped columns."""
  if drop is not None:
    logits = jnp.where(drop, -jnp.inf, logits)
  return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))


def supervised_contrastive_loss(emb: jax.Array, related: jax.Array, valid: jax.Array,
                                scale: jax.Array) -> jax.Array:
  """Multi-positive InfoNCE (SupCon's L_out) over one block of texts [N, D].

  Every valid text is an anchor; its positives are the other valid texts `related` to it (bool
  [N, N]: sharing a label, or a pair's two sides), and its softmax runs over every other valid text.
  Anchors without a positive in the block do not count. Mean over anchors.
  """
  others = distinct_valid_pairs(valid)
  logits = jnp.where(others, scale * jnp.einsum("id,jd->ij", emb, emb, precision=_HIGHEST), -jnp.inf)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  positive = related & others
  num_pos = positive.sum(axis=-1)
  per_anchor = -jnp.where(positive, log_p, 0.0).sum(axis=-1) / jnp.maximum(num_pos, 1)
  return masked_mean(per_anchor, num_pos > 0)


def in_batch_bce_loss(emb: jax.Array, related: jax.Array, valid: jax.Array, scale: jax.Array,
                      bias: jax.Array) -> jax.Array:
  """Pair BCE on sigmoid(scale * cos + bias) over every pair of valid texts in a block [N, D].

  Targets are `related` (bool [N, N]); positive and negative pairs are averaged separately and then
  together, so the many free in-batch negatives do not drown the few positives.
  """
  pairs = distinct_valid_pairs(valid)
  logits = scale * jnp.einsum("id,jd->ij", emb, emb, precision=_HIGHEST) + bias
  bce = optax.sigmoid_binary_cross_entropy(logits, related.astype(jnp.float32))
  return (masked_mean(bce, pairs & related) + masked_mean(bce, pairs & ~related)) / 2


def relational_distillation_loss(student: jax.Array, teacher: jax.Array, valid: jax.Array,
                                 pairs: jax.Array | None = None) -> jax.Array:
  """Mean squared difference of the pairwise cosines of `student` [N, D] and `teacher` [N, D'] over
  pairs of valid texts (and of `pairs`, bool [N, N], when given): keeps the geometry of the batch as
  the frozen teacher saw it (widths may differ)."""
  return mean_over_pairs(cosine_gaps(student, teacher), valid, pairs)


def cosine_gaps(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """[N, N] squared differences between the pairwise cosines of `student` [N, D] and of the frozen
  `teacher` [N, D']."""
  s = jnp.einsum("id,jd->ij", student, student, precision=_HIGHEST)
  t = jax.lax.stop_gradient(jnp.einsum("id,jd->ij", teacher, teacher, precision=_HIGHEST))
  return (s - t) ** 2


def mean_over_pairs(gaps: jax.Array, valid: jax.Array, pairs: jax.Array | None = None) -> jax.Array:
  """Mean of `gaps` [N, N] over the pairs of two different valid texts (and of `pairs`, when given)."""
  return masked_mean(gaps, distinct_valid_pairs(valid) & (True if pairs is None else pairs))


def distinct_valid_pairs(valid: jax.Array) -> jax.Array:
  """bool [N, N]: the pairs of two different texts that are both `valid` [N]."""
  return valid[None, :] & valid[:, None] & ~jnp.eye(valid.shape[0], dtype=bool)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `x` where `mask` holds; 0 (not NaN) where it holds nowhere."""
  return jnp.where(mask, x, 0.0).sum() / jnp.maximum(mask.sum(), 1)


def embedding_distillation_loss(student: jax.Array, teacher: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean squared distance between each valid row of `student` [N, D] and the same row of the frozen
  `teacher` [N, D] (both L2-normalised: 2 - 2 cos). Pulls texts to given points of the student's space,
  e.g. a sentence's translations to the frozen base's embedding of the English sentence."""
  sq = jnp.sum((student - jax.lax.stop_gradient(teacher)) ** 2, axis=-1)
  return masked_mean(sq, valid)


def matryoshka(loss_fn: Callable[..., jax.Array], dims: Sequence[int]) -> Callable[..., jax.Array]:
  """`loss_fn` averaged over embedding prefixes of sizes `dims`, each re-normalised.

  The wrapped loss takes `loss_fn`'s arguments; it truncates `a`, `b` and the keyword `negatives`
  (when given), and passes the rest through. List the full dimension to include it.
  """
  dims = tuple(int(d) for d in dims)
  if not dims or min(dims) < 1:
    raise ValueError(f"matryoshka dims must be a non-empty list of positive sizes, got {dims}")

  @functools.wraps(loss_fn)
  def wrapped(a, b, *args, negatives=None, **kwargs):
    if max(dims) > a.shape[-1]:
      raise ValueError(f"matryoshka dims {dims} exceed the embedding size {a.shape[-1]}")
    losses = []
    for d in dims:
      if negatives is not None:
        kwargs["negatives"] = _prefix(negatives, d)
      losses.append(loss_fn(_prefix(a, d), _prefix(b, d), *args, **kwargs))
    return sum(losses) / len(dims)

  return wrapped


def _prefix(x: jax.Array, d: int) -> jax.Array:
  x = x[..., :d]
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))
