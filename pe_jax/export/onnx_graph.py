"""The embedding model as an ONNX graph, built operator by operator from the parameters (no torch).

  inputs   input_ids, attention_mask: int64 [batch, sequence] (right-padded; token type 0 throughout,
           as pe_jax embeds one text per row, so there is no token_type_ids input)
  output   sentence_embedding: float32 [batch, D], pooled, projected and L2-normalised as pe_jax does

Opset 17 (LayerNormalization). Computation is float32 whatever the model's compute dtype. The text
prefix and truncation length live in the graph's metadata and in the folder's embedder.json: ONNX sees
token ids, not text.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pe_jax.export.runtime_folder import write_runtime_files
from pe_jax.models import weights
from pe_jax.models.encoder import Encoder

OPSET = 17
MODEL_FILE = "model.onnx"
OUTPUT = "sentence_embedding"
_MASKED = -1e9  # added to attention scores of padding keys; exp() of it is exactly 0 in float32


class _Graph:
  """Nodes and initializers, each op's output named after it so the graph reads in a viewer."""

  def __init__(self):
    self.nodes: list[onnx.NodeProto] = []
    self.initializers: list[onnx.TensorProto] = []
    self._count = 0

  def const(self, name: str, value) -> str:
    self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
    return name

  def const_once(self, name: str, value) -> str:
    """A constant shared by every layer: added on first use only."""
    if all(t.name != name for t in self.initializers):
      self.const(name, value)
    return name

  def op(self, op_type: str, *inputs: str, name: str | None = None, **attrs) -> str:
    self._count += 1
    out = name or f"{op_type.lower()}_{self._count}"
    self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self._count}", **attrs))
    return out


def build_onnx(encoder: Encoder, *, prefix: str = "") -> onnx.ModelProto:
  cfg = encoder.cfg
  p = weights.param_arrays(encoder, np.float32)
  g = _Graph()
  f32 = lambda v: np.asarray(v, np.float32)
  i64 = lambda v: np.asarray(v, np.int64)

  def param(path: str) -> str:
    return g.const(path, p[path])

  def dense(x: str, path: str) -> str:
    return g.op("Add", g.op("MatMul", x, param(f"{path}.kernel")), param(f"{path}.bias"))

  def layer_norm(x: str, path: str) -> str:
    return g.op("LayerNormalization", x, param(f"{path}.scale"), param(f"{path}.bias"), axis=-1,
                epsilon=cfg.layer_norm_eps)

  half, one = g.const("half", f32(0.5)), g.const("one", f32(1.0))

  def activation(x: str) -> str:
    if cfg.hidden_act == "gelu":  # exact: 0.5 x (1 + erf(x / sqrt 2))
      erf = g.op("Erf", g.op("Div", x, g.const_once("sqrt2", f32(math.sqrt(2.0)))))
      return g.op("Mul", g.op("Mul", x, half), g.op("Add", erf, one))
    if cfg.hidden_act in ("gelu_new", "gelu_pytorch_tanh"):  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
      cube = g.op("Mul", g.op("Mul", x, x), x)
      inner = g.op("Add", x, g.op("Mul", cube, g.const_once("gelu_cubic", f32(0.044715))))
      tanh = g.op("Tanh", g.op("Mul", inner, g.const_once("sqrt_2_over_pi", f32(math.sqrt(2.0 / math.pi)))))
      return g.op("Mul", g.op("Mul", x, half), g.op("Add", tanh, one))
    if cfg.hidden_act == "relu":
      return g.op("Relu", x)
    raise ValueError(f"hidden_act {cfg.hidden_act!r} has no ONNX translation here")

  # Embeddings: word + position (counted from position_offset) + token type 0, then LayerNorm.
  length = g.op("Gather", g.op("Shape", "input_ids"), g.const("axis1", i64(1)), axis=0)
  offset = g.const("position_offset", i64(cfg.position_offset))
  positions = g.op("Range", offset, g.op("Add", length, offset), g.const("step1", i64(1)))
  x = g.op("Add", g.op("Gather", param("embeddings.word.embedding"), "input_ids"),
           g.op("Gather", param("embeddings.position.embedding"), positions))
  x = g.op("Add", x, g.const("token_type_0", p["embeddings.token_type.embedding"][0]))
  x = layer_norm(x, "embeddings.norm")

  mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)  # [B, T]
  key_bias = g.op("Unsqueeze", g.op("Mul", g.op("Sub", one, mask), g.const("masked", f32(_MASKED))),
                  g.const("axes_heads_queries", i64([1, 2])))  # [B, 1, 1, T]
  head_dim = cfg.hidden_size // cfg.num_heads
  split_shape = g.const("split_heads", i64([0, 0, cfg.num_heads, head_dim]))
  merge_shape = g.const("merge_heads", i64([0, 0, cfg.hidden_size]))
  scale = g.const("attention_scale", f32(1.0 / math.sqrt(head_dim)))
  for i in range(cfg.num_layers):
    at = f"layers.{i}.attention"
    heads = lambda y, perm: g.op("Transpose", g.op("Reshape", y, split_shape), perm=perm)
    q = heads(dense(x, f"{at}.query"), [0, 2, 1, 3])  # [B, N, T, d]
    k = heads(dense(x, f"{at}.key"), [0, 2, 3, 1])  # [B, N, d, T]
    v = heads(dense(x, f"{at}.value"), [0, 2, 1, 3])
    scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), key_bias)
    context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
    context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge_shape)
    x = layer_norm(g.op("Add", x, dense(context, f"{at}.out")), f"layers.{i}.attention_norm")
    hidden = activation(dense(x, f"layers.{i}.mlp_in"))
    x = layer_norm(g.op("Add", x, dense(hidden, f"layers.{i}.mlp_out")), f"layers.{i}.mlp_norm")

  if cfg.pooling == "cls":
    pooled = g.op("Gather", x, g.const("first_token", i64(0)), axis=1)
  else:  # mean over real tokens, the count clamped as pe_jax and sentence-transformers do
    weights_3d = g.op("Unsqueeze", mask, g.const("axis_hidden", i64([2])))
    tokens_axis = g.const("axis_tokens", i64([1]))
    sums = g.op("ReduceSum", g.op("Mul", x, weights_3d), tokens_axis, keepdims=0)
    counts = g.op("Max", g.op("ReduceSum", weights_3d, tokens_axis, keepdims=0), g.const("min_count", f32(1e-9)))
    pooled = g.op("Div", sums, counts)
  if encoder.projection is not None:
    pooled = dense(pooled, "projection")
  if cfg.normalize:
    norm = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", pooled, pooled), g.const("axis_last", i64([-1])), keepdims=1))
    pooled = g.op("Div", pooled, g.op("Max", norm, g.const("min_norm", f32(1e-12))))
  g.op("Identity", pooled, name=OUTPUT)

  tokens = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
  graph = helper.make_graph(
      g.nodes, "pe_jax_embedding", [tokens("input_ids"), tokens("attention_mask")],
      [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", cfg.embedding_dim])], g.initializers)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pe_jax")
  model.ir_version = 8  # what onnxruntime releases from 1.14 on read
  helper.set_model_props(model, {"prefix": prefix, "max_seq_length": str(cfg.max_seq_length),
                                 "pad_token_id": str(cfg.pad_token_id), "pooling": cfg.pooling})
  onnx.checker.check_model(model, full_check=True)
  return model


def write_onnx_folder(folder: pathlib.Path, encoder: Encoder, tokenizer, prefix: str) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  onnx.save(build_onnx(encoder, prefix=prefix), str(folder / MODEL_FILE))
  write_runtime_files(folder, encoder, tokenizer, prefix, fmt="onnx", files={"program": MODEL_FILE})
