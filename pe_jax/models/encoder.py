"""The siamese post encoder: a BERT / XLM-R family transformer in Flax NNX, pooled, projected, normalised.

Weights carry logical axis names ("vocab", "embed", "heads", "mlp", "proj"); `pe_jax.sharding` maps them
onto mesh axes, so the model code never mentions a mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from pe_jax import sharding as sharding_lib

# Pretrained transformers were trained with these defaults; init only matters for new heads and tests.
_INIT = nnx.initializers.truncated_normal(stddev=0.02)
_ZEROS = nnx.initializers.zeros_init()
_ONES = nnx.initializers.ones_init()

POOLINGS = ("mean", "cls")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Architecture plus the embedding recipe (pooling, projection, normalisation, truncation)."""

  vocab_size: int
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  pad_token_id: int = 0
  # XLM-R/RoBERTa count positions from pad_token_id + 1; BERT from 0.
  position_offset: int = 0
  pooling: str = "mean"
  projection_dim: int | None = None  # the paper's compact embedding is 50-d
  normalize: bool = True
  max_seq_length: int = 256  # truncation length, as the model's sentence-transformers config says
  param_dtype: str = "float32"
  dtype: str = "float32"  # compute dtype: "bfloat16" halves activation memory on accelerators

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
    if self.max_seq_length + self.position_offset > self.max_position_embeddings:
      raise ValueError(
          f"max_seq_length {self.max_seq_length} (+ position offset {self.position_offset}) exceeds "
          f"max_position_embeddings {self.max_position_embeddings}")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; known: {sorted(_ACTIVATIONS)}")

  @property
  def embedding_dim(self) -> int:
    return self.projection_dim or self.hidden_size

  def replace(self, **changes: Any) -> "EncoderConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "EncoderConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown encoder config fields {unknown}; known: {sorted(known)}")
    return cls(**values)

  @classmethod
  def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> "EncoderConfig":
    """Reads a Hugging Face `config.json` of a BERT / XLM-R / RoBERTa model."""
    model_type = hf.get("model_type", "bert")
    if model_type not in ("bert", "xlm-roberta", "roberta"):
      raise ValueError(f"model_type {model_type!r} is not a BERT/XLM-R family encoder")
    pad = hf.get("pad_token_id", 0)
    offset = hf.get("position_offset", pad + 1 if model_type != "bert" else 0)
    values = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_act=hf.get("hidden_act", "gelu"),
        pad_token_id=pad,
        position_offset=offset,
        max_seq_length=min(512, hf["max_position_embeddings"] - offset),
    )
    values.update(overrides)
    return cls(**values)


_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" is the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def _param(init, *names):
  return nnx.with_partitioning(init, names)


@jax.custom_vjp
def _bf16_matmul(x, w):
  """x @ w (x's last axis against w's first) from bfloat16 operands, accumulated and returned in float32.

  XLA:CPU multiplies bfloat16 natively (AVX512-BF16, AMX) only when the product accumulates into float32;
  a bfloat16 result, and the backward products autodiff would build from the float32 cotangent, take its
  float32 path instead. So the backward pass is written out too: every product here is bfloat16 x bfloat16
  into float32, 2.2x float32's rate on the cores docs/results.md times. Accelerators run it as they would
  any bfloat16 dot."""
  return jnp.dot(x, w, preferred_element_type=jnp.float32)


def _bf16_matmul_fwd(x, w):
  return _bf16_matmul(x, w), (x, w)


def _bf16_matmul_bwd(residuals, g):
  x, w = residuals
  g = g.astype(x.dtype)
  dx = jnp.dot(g, w.T, preferred_element_type=jnp.float32)
  dw = jnp.einsum("...i,...o->io", x, g, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def _bf16_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **unused):
  """`nnx.Linear`'s dot_general under bfloat16 compute (its one contraction: lhs's last axis, rhs's first)."""
  del precision, preferred_element_type, unused
  if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())):
    raise NotImplementedError(f"only nnx.Linear's contraction is supported, got {dimension_numbers}")
  return _bf16_matmul(lhs, rhs)


# A masked logit: finite, so that a row with no key to attend to (a padding token's) gives uniform weights
# instead of NaN; such rows are never pooled.
_MASKED = -1e30


@jax.custom_vjp
def _bf16_attention(q, k, v, mask):
  """Softmax attention [B, T, N, H] under `mask` (broadcast to [B, N, T, S]) with every product bfloat16 x
  bfloat16 into float32 and the softmax in float32; returns float32.

  What `_bf16_matmul` is to the dense layers: `jax.nn.dot_product_attention` given bfloat16 takes XLA:CPU's
  float32 path, and attention was a third of a training step (docs/results.md, "bfloat16 attention")."""
  return _bf16_attention_fwd(q, k, v, mask)[0]


def _bf16_attention_fwd(q, k, v, mask):
  qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
  logits = jnp.einsum("btnh,bsnh->bnts", qb, kb, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
  probs = jax.nn.softmax(jnp.where(mask, logits, _MASKED), axis=-1)
  out = jnp.einsum("bnts,bsnh->btnh", probs.astype(jnp.bfloat16), vb, preferred_element_type=jnp.float32)
  return out, (q, k, v, probs)


def _bf16_attention_bwd(residuals, g):
  q_in, k_in, v_in, probs = residuals
  q, k, v = (x.astype(jnp.bfloat16) for x in (q_in, k_in, v_in))
  g = g.astype(jnp.bfloat16)
  dv = jnp.einsum("bnts,btnh->bsnh", probs.astype(jnp.bfloat16), g, preferred_element_type=jnp.float32)
  dprobs = jnp.einsum("btnh,bsnh->bnts", g, v, preferred_element_type=jnp.float32)
  # Softmax's backward; masked keys have probability 0 and so get no gradient.
  dlogits = probs * (dprobs - jnp.sum(dprobs * probs, axis=-1, keepdims=True))
  dlogits = (dlogits * q.shape[-1] ** -0.5).astype(jnp.bfloat16)
  dq = jnp.einsum("bnts,bsnh->btnh", dlogits, k, preferred_element_type=jnp.float32)
  dk = jnp.einsum("bnts,btnh->bsnh", dlogits, q, preferred_element_type=jnp.float32)
  return dq.astype(q_in.dtype), dk.astype(k_in.dtype), dv.astype(v_in.dtype), None


_bf16_attention.defvjp(_bf16_attention_fwd, _bf16_attention_bwd)


def _dense(rngs, cfg: EncoderConfig, n_in: int, n_out: int, axes: tuple[str | None, str | None]) -> nnx.Linear:
  return nnx.Linear(
      n_in, n_out, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs,
      dot_general=_bf16_dot_general if cfg.dtype == "bfloat16" else jax.lax.dot_general,
      kernel_init=_param(_INIT, *axes), bias_init=_param(_ZEROS, axes[1]))


def _norm(rngs, cfg: EncoderConfig) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
      scale_init=_param(_ONES, "embed"), bias_init=_param(_ZEROS, "embed"), rngs=rngs)


def _embed(rngs, cfg: EncoderConfig, rows: int, row_axis: str | None) -> nnx.Embed:
  return nnx.Embed(
      rows, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
      embedding_init=_param(_INIT, row_axis, "embed"), rngs=rngs)


class Embeddings(nnx.Module):

  def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.word = _embed(rngs, cfg, cfg.vocab_size, "vocab")
    self.position = _embed(rngs, cfg, cfg.max_position_embeddings, None)
    self.token_type = _embed(rngs, cfg, cfg.type_vocab_size, None)
    self.norm = _norm(rngs, cfg)

  def __call__(self, input_ids, positions):
    # Token type 0 throughout: posts are embedded one text at a time, never as a pair in one row.
    x = self.word(input_ids) + self.position(positions + self.cfg.position_offset) + self.token_type.embedding[0]
    return self.norm(x)


class SelfAttention(nnx.Module):

  def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
    h = cfg.hidden_size
    self.num_heads = cfg.num_heads
    self.query = _dense(rngs, cfg, h, h, ("embed", "heads"))
    self.key = _dense(rngs, cfg, h, h, ("embed", "heads"))
    self.value = _dense(rngs, cfg, h, h, ("embed", "heads"))
    self.out = _dense(rngs, cfg, h, h, ("heads", "embed"))
    self.attend = _bf16_attention if cfg.dtype == "bfloat16" else (
        lambda q, k, v, mask: jax.nn.dot_product_attention(q, k, v, mask=mask))

  def __call__(self, x, mask):
    b, t, h = x.shape
    split = lambda y: y.reshape(b, t, self.num_heads, h // self.num_heads)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    # mask [B, 1, 1, T]: keys that are padding are never attended to.
    y = self.attend(q, k, v, mask)
    return self.out(y.reshape(b, t, h))


class TransformerLayer(nnx.Module):
  """A post-LayerNorm BERT block."""

  def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
    self.attention = SelfAttention(cfg, rngs)
    self.attention_norm = _norm(rngs, cfg)
    self.mlp_in = _dense(rngs, cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"))
    self.mlp_out = _dense(rngs, cfg, cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"))
    self.mlp_norm = _norm(rngs, cfg)
    self.activation = _ACTIVATIONS[cfg.hidden_act]

  def __call__(self, x, mask):
    x = self.attention_norm(x + self.attention(x, mask))
    return self.mlp_norm(x + self.mlp_out(self.activation(self.mlp_in(x))))


def pool(hidden, attention_mask, how: str):
  """Mean over real tokens (sentence-transformers' mean pooling) or the first ([CLS]/<s>) token."""
  if how == "cls":
    return hidden[:, 0]
  weights = attention_mask.astype(hidden.dtype)[..., None]
  return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)


def l2_normalize(x, eps: float = 1e-12):
  # Same clamp as torch.nn.functional.normalize, so an all-zero vector stays zero instead of NaN.
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class Encoder(nnx.Module):
  """Text tokens -> one embedding per text. One instance embeds both sides of a pair (siamese)."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embeddings = Embeddings(cfg, rngs)
    self.layers = nnx.List([TransformerLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    # The projection computes in float32 whatever the encoder's dtype: see `finish`.
    self.projection = (
        _dense(rngs, cfg.replace(dtype="float32"), cfg.hidden_size, cfg.projection_dim, ("embed", "proj"))
        if cfg.projection_dim else None)

  def trunk(self, input_ids, positions, mask, num_layers: int):
    """The embeddings and the first `num_layers` layers: the hidden states a frozen trunk hands on."""
    return self._layers(self.embeddings(input_ids, positions), mask, 0, num_layers)

  def _layers(self, x, mask, start: int, stop: int | None = None):
    for layer in list(self.layers)[start:stop]:
      x = layer(x, mask)
    return x

  def finish(self, pooled):
    """Pooled [N, hidden] -> the embedding: projected, then normalised.

    Project and normalise in fp32: the 50-d output is compared by cosine and small errors matter there."""
    pooled = pooled.astype(jnp.float32)
    if self.projection is not None:
      pooled = self.projection(pooled).astype(jnp.float32)
    return l2_normalize(pooled) if self.cfg.normalize else pooled

  def hidden_states(self, input_ids, attention_mask):
    """Right-padded rows, one text each: real tokens sit at 0..n-1, so positions are a plain range."""
    positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
    return self.trunk(input_ids, positions, attention_mask.astype(bool)[:, None, None, :], self.cfg.num_layers)

  def __call__(self, input_ids, attention_mask):
    hidden = self.hidden_states(input_ids, attention_mask)
    return self.finish(pool(hidden.astype(jnp.float32), attention_mask, self.cfg.pooling))

  def without_projection(self, *, normalize: bool) -> "Encoder":
    """The same weights without the projection: the full-width pooled embedding (unnormalised, to fit
    a projection on; normalised, the base model's own embedding). Shares this encoder's arrays."""
    cfg = self.cfg.replace(projection_dim=None, normalize=normalize)
    state = nnx.state(self)
    sharding = jax.tree.leaves(state)[0].sharding
    mesh = sharding.mesh if isinstance(sharding, jax.sharding.NamedSharding) else sharding_lib.single_device_mesh()
    with sharding_lib.activate(mesh):  # annotated variables need a mesh even when only abstract
      abstract = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.graphdef(abstract), nnx.State({k: v for k, v in state.items() if k != "projection"}))

  def embed_packed(self, input_ids, segment_ids, positions, num_texts: int, shards: int = 1, *, trunk=None):
    """Several texts packed into each row, so no compute goes to padding (training batches).

    `segment_ids[r, t]` is 1 + the index of the text that token belongs to (0: padding), `positions`
    restart at 0 for each text. Attention stays inside a text; pooling is per text. -> [num_texts, D].
    `shards`, `trunk`: see `pool_packed`.
    """
    return self.finish(self.pool_packed(input_ids, segment_ids, positions, num_texts, shards, trunk=trunk))

  def packed_trunk(self, input_ids, segment_ids, positions, num_layers: int):
    """`trunk` of packed rows -> (hidden states after layer `num_layers`, num_layers), what `pool_packed`
    takes as `trunk`: a frozen trunk computed once serves the student and its frozen teacher alike."""
    return self.trunk(input_ids, positions, _packed_mask(segment_ids), num_layers), num_layers

  def pool_packed(self, input_ids, segment_ids, positions, num_texts: int, shards: int = 1, *, trunk=None):
    """`embed_packed` before the projection: the pooled full-width states [num_texts, hidden], fp32
    (a frozen teacher reads both its full-width and its projected embedding off one pass).

    `trunk`: `packed_trunk`'s (states, k) of the same rows; the pass starts there, at layer k.

    `shards` > 1: the rows are that many equal blocks, one per data-parallel shard, and block g's segment
    ids count its own texts, which land at g * K + (id - 1), K = num_texts // shards. Each device then
    pools only its own rows and the call needs no cross-device sum: with one global numbering the pooled
    sum is an all-reduce, and several such calls in flight at once deadlocked CPU processes joined over
    gloo (the embedder dispatches calls ahead). Training keeps one numbering: its loss compares every text
    with every other anyway."""
    mask = _packed_mask(segment_ids)
    states, start = trunk if trunk is not None else (self.embeddings(input_ids, positions), 0)
    hidden = self._layers(states, mask, start)
    width = hidden.shape[-1]
    flat = hidden.reshape(shards, -1, width).astype(jnp.float32)
    text = segment_ids.reshape(shards, -1) - 1  # padding -> -1, which segment_sum drops
    first = positions.reshape(shards, -1, 1) == 0
    per_shard = num_texts // shards

    def pool_shard(flat, text, first):
      if self.cfg.pooling == "cls":
        return jax.ops.segment_sum(flat * first, text, num_segments=per_shard)
      sums = jax.ops.segment_sum(flat, text, num_segments=per_shard)
      counts = jax.ops.segment_sum(jnp.ones_like(text, jnp.float32), text, num_segments=per_shard)
      return sums / jnp.maximum(counts, 1.0)[:, None]

    return jax.vmap(pool_shard)(flat, text, first).reshape(num_texts, width)


def _packed_mask(segment_ids):
  """[rows, 1, T, T]: a token attends to the tokens of its own text only (segment 0 is padding)."""
  seg = segment_ids[:, :, None]
  return ((seg == segment_ids[:, None, :]) & (seg > 0))[:, None]
