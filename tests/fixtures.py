"""Tiny Hugging Face model folders written on the fly, and an independent NumPy forward to check them against.

`write_tiny_hf_folder` writes what a sentence-transformers checkpoint holds (config.json, model.safetensors with
Hugging Face names, tokenizer.json, sentence_bert_config.json, 1_Pooling/config.json) for a 2-layer, 32-wide
BERT or XLM-R style model. `numpy_embed` is the reference forward, written from the Hugging Face names alone.
"""

from __future__ import annotations

import json
import pathlib
import string

import numpy as np
from flax import nnx
from safetensors.numpy import save_file
from scipy.special import erf
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from pe_jax.tokenization import pad_batch

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 64
MAX_SEQ_LENGTH = 24
WORDS = ["the", "a", "of", "and", "to", "is", "in", "it", "hello", "world", "post", "job", "team", "data", "model",
         "great", "news", "today", "we", "are", "hiring", "!", ".", ",", "?"]

# BERT: [PAD]=0, positions from 0, two token types. XLM-R: <pad>=1, positions from pad + 1 = 2, one token type.
# e5: BERT's model with XLM-R's tokens.
VARIANTS = {
    "bert": dict(model_type="bert", specials=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], pad=0, unk=1, cls=2,
                 sep=3, type_vocab_size=2, offset=0, pooling="mean"),
    "xlmr": dict(model_type="xlm-roberta", specials=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], pad=1, unk=3, cls=0,
                 sep=2, type_vocab_size=1, offset=2, pooling="cls"),
    # multilingual-e5's layout: a BERT model (positions from 0, two token types) with XLM-R's special tokens.
    "e5": dict(model_type="bert", specials=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], pad=1, unk=3, cls=0, sep=2,
               type_vocab_size=2, offset=0, pooling="mean"),
}


def vocabulary(variant: str) -> list[str]:
  """Specials, whole words, letters and "##" letters: every lowercase ASCII word has a WordPiece split."""
  letters = list(string.ascii_lowercase + string.digits)
  return VARIANTS[variant]["specials"] + WORDS + letters + ["##" + c for c in letters]


def tiny_tokenizer(variant: str) -> Tokenizer:
  v = VARIANTS[variant]
  vocab = {piece: i for i, piece in enumerate(vocabulary(variant))}
  specials = v["specials"]
  tok = Tokenizer(models.WordPiece(vocab, unk_token=specials[v["unk"]]))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  cls, sep = specials[v["cls"]], specials[v["sep"]]
  tok.post_processor = processors.TemplateProcessing(
      single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
      special_tokens=[(cls, v["cls"]), (sep, v["sep"])])
  return tok


def tiny_tensors(variant: str, seed: int = 0) -> dict[str, np.ndarray]:
  """Random weights under Hugging Face BertModel names, PyTorch layout ([out, in]), large enough to matter."""
  v = VARIANTS[variant]
  rng = np.random.default_rng(seed)
  normal = lambda *shape, std=0.3: (rng.standard_normal(shape) * std).astype(np.float32)
  vocab = len(vocabulary(variant))
  t = {
      "embeddings.word_embeddings.weight": normal(vocab, HIDDEN, std=1.0),
      "embeddings.position_embeddings.weight": normal(MAX_SEQ_LENGTH + v["offset"], HIDDEN, std=1.0),
      "embeddings.token_type_embeddings.weight": normal(v["type_vocab_size"], HIDDEN),
      "embeddings.LayerNorm.weight": 1 + normal(HIDDEN, std=0.1),
      "embeddings.LayerNorm.bias": normal(HIDDEN, std=0.1),
  }
  for i in range(LAYERS):
    p = f"encoder.layer.{i}."
    for name, (n_out, n_in) in {"attention.self.query": (HIDDEN, HIDDEN), "attention.self.key": (HIDDEN, HIDDEN),
                                "attention.self.value": (HIDDEN, HIDDEN), "attention.output.dense": (HIDDEN, HIDDEN),
                                "intermediate.dense": (FFN, HIDDEN), "output.dense": (HIDDEN, FFN)}.items():
      t[p + name + ".weight"] = normal(n_out, n_in)
      t[p + name + ".bias"] = normal(n_out, std=0.1)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      t[p + name + ".weight"] = 1 + normal(HIDDEN, std=0.1)
      t[p + name + ".bias"] = normal(HIDDEN, std=0.1)
  return t


def hf_config(variant: str) -> dict:
  v = VARIANTS[variant]
  return {
      "architectures": ["XLMRobertaModel" if variant == "xlmr" else "BertModel"],
      "model_type": v["model_type"], "vocab_size": len(vocabulary(variant)), "hidden_size": HIDDEN,
      "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": FFN,
      "max_position_embeddings": MAX_SEQ_LENGTH + v["offset"], "type_vocab_size": v["type_vocab_size"],
      "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": v["pad"],
  }


def write_tiny_hf_folder(folder: pathlib.Path, variant: str = "bert", *, tensors: dict[str, np.ndarray] | None = None,
                         shards: int = 1) -> pathlib.Path:
  """A sentence-transformers style folder; `shards` > 1 writes a model.safetensors.index.json and its shards."""
  folder.mkdir(parents=True, exist_ok=True)
  tensors = tiny_tensors(variant) if tensors is None else tensors
  (folder / "config.json").write_text(json.dumps(hf_config(variant), indent=2))
  if shards == 1:
    save_file(tensors, str(folder / "model.safetensors"))
  else:
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
      file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
      part = {n: tensors[n] for n in names[s::shards]}
      save_file(part, str(folder / file))
      weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
  tiny_tokenizer(variant).save(str(folder / "tokenizer.json"))
  (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_SEQ_LENGTH}))
  cls = VARIANTS[variant]["pooling"] == "cls"
  (folder / "1_Pooling").mkdir(exist_ok=True)
  (folder / "1_Pooling" / "config.json").write_text(json.dumps({
      "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": cls, "pooling_mode_mean_tokens": not cls,
      "pooling_mode_max_tokens": False}))
  return folder


def numpy_embed(tensors: dict[str, np.ndarray], ids: list[int], *, heads: int = HEADS, offset: int = 0,
                pooling: str = "mean", projection: tuple[np.ndarray, np.ndarray] | None = None,
                normalize: bool = True, eps: float = 1e-12) -> np.ndarray:
  """One unpadded sequence through a post-LayerNorm BERT in float64: pooled, optionally projected
  (`projection` = (kernel [in, out], bias)) and L2-normalised."""
  w = {k: np.asarray(v, np.float64) for k, v in tensors.items()}

  def norm(x, name):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

  def dense(x, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]

  n = len(ids)
  x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][offset:offset + n]
       + w["embeddings.token_type_embeddings.weight"][0])
  x = norm(x, "embeddings.LayerNorm")
  layer = 0
  while f"encoder.layer.{layer}.output.dense.weight" in w:
    p = f"encoder.layer.{layer}."
    q, k, v = (dense(x, p + "attention.self." + m).reshape(n, heads, -1).transpose(1, 0, 2)
               for m in ("query", "key", "value"))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    context = (probs / probs.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(n, -1)
    x = norm(x + dense(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    h = dense(x, p + "intermediate.dense")
    x = norm(x + dense(0.5 * h * (1 + erf(h / np.sqrt(2))), p + "output.dense"), p + "output.LayerNorm")
    layer += 1
  pooled = x[0] if pooling == "cls" else x.mean(0)
  if projection is not None:
    pooled = pooled @ np.asarray(projection[0], np.float64) + np.asarray(projection[1], np.float64)
  return pooled / np.linalg.norm(pooled) if normalize else pooled


# Jitted: eager NNX dispatches (and compiles) op by op, which costs seconds per new shape on 2 cores.
_forward = nnx.jit(lambda model, ids, mask: model(ids, mask))


def run_encoder(model, sequences, *, length: int = MAX_SEQ_LENGTH, rows: int | None = None) -> np.ndarray:
  """Token id sequences right-padded to `length` columns and `rows` rows, through the encoder."""
  ids, mask = pad_batch([np.asarray(s) for s in sequences], length, rows or len(sequences), model.cfg.pad_token_id)
  return np.asarray(_forward(model, ids, mask))
