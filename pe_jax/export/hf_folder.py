"""The Hugging Face encoder folder, and beside it the embedding recipe in sentence-transformers' own files.

  config.json, model.safetensors          a plain BertModel / XLMRobertaModel (transformers' AutoModel loads it)
  tokenizer.json, tokenizer_config.json, special_tokens_map.json
  sentence_bert_config.json               truncation length
  1_Pooling/config.json                   mean or CLS pooling
  2_Dense/config.json, model.safetensors  the projection (no activation), when the model has one
  config_sentence_transformers.json       the text prefix as the default prompt

transformers ignores the recipe files; `pe_jax.models.pretrained.from_hf_folder` reads them back, so a
folder re-imports into exactly the model that was exported.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np
import tokenizers
from safetensors.numpy import save_file

from pe_jax.models import weights
from pe_jax.models.encoder import Encoder, EncoderConfig

POOLING_DIR = "1_Pooling"
DENSE_DIR = "2_Dense"
IDENTITY = "torch.nn.modules.linear.Identity"  # sentence-transformers names a Dense activation by class path

# Special tokens by role, as each family's tokenizer names them.
_SPECIAL_TOKENS = {
    "bert": dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]"),
    "xlm-roberta": dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                        unk_token="<unk>", mask_token="<mask>"),
}
_ARCHITECTURES = {"bert": "BertModel", "xlm-roberta": "XLMRobertaModel"}


class UnexpressibleError(ValueError):
  """A model feature the chosen format has no way to write; exporting it anyway would change the embedding."""


def model_type(cfg: EncoderConfig) -> str:
  """BERT counts positions from 0, XLM-R from pad + 1; Hugging Face configs have no other way to say it."""
  if cfg.position_offset == 0:
    return "bert"
  if cfg.position_offset == cfg.pad_token_id + 1:
    return "xlm-roberta"
  raise UnexpressibleError(
      f"position_offset {cfg.position_offset} with pad_token_id {cfg.pad_token_id}: a Hugging Face config can "
      "only say 0 (BERT) or pad_token_id + 1 (XLM-R/RoBERTa)")


def hf_config(cfg: EncoderConfig) -> dict[str, Any]:
  """config.json of the encoder; `EncoderConfig.from_hf_config` reads it back."""
  kind = model_type(cfg)
  return {
      "architectures": [_ARCHITECTURES[kind]],
      "model_type": kind,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "intermediate_size": cfg.intermediate_size,
      "max_position_embeddings": cfg.max_position_embeddings,
      "type_vocab_size": cfg.type_vocab_size,
      "layer_norm_eps": cfg.layer_norm_eps,
      "hidden_act": cfg.hidden_act,
      "pad_token_id": cfg.pad_token_id,
      "position_embedding_type": "absolute",
      "hidden_dropout_prob": 0.1,  # training-time settings for whoever fine-tunes it next: the BERT defaults
      "attention_probs_dropout_prob": 0.1,
      "initializer_range": 0.02,
      "dtype": "float32",
  }


def _write_json(path: pathlib.Path, value: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(value, indent=2) + "\n")


def write_tokenizer(folder: pathlib.Path, tokenizer: tokenizers.Tokenizer, cfg: EncoderConfig) -> None:
  """tokenizer.json plus the two small files transformers' AutoTokenizer wants beside it."""
  vocab = tokenizer.get_vocab()
  # The tokens' family is the tokenizer's, which need not be the model's: multilingual-e5 is a BERT model with
  # XLM-R's tokenizer. The family whose padding token sits at the model's pad id names them (without a padding
  # token transformers and sentence-transformers cannot batch texts of different lengths).
  families = sorted(_SPECIAL_TOKENS, key=lambda kind: (vocab.get(_SPECIAL_TOKENS[kind]["pad_token"]) != cfg.pad_token_id,
                                                       kind != model_type(cfg)))
  specials = {role: token for role, token in _SPECIAL_TOKENS[families[0]].items() if token in vocab}
  (folder / "tokenizer.json").write_text(tokenizer.to_str())
  # The generic fast class loads tokenizer.json as it is; the family classes of transformers 5 rebuild the
  # tokenizer from its vocabulary and assume the family's model (XLM-R: Unigram), which a custom one is not.
  _write_json(folder / "tokenizer_config.json", {
      "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.max_seq_length, **specials})
  _write_json(folder / "special_tokens_map.json", specials)


def projection_tensors(encoder: Encoder) -> dict[str, np.ndarray]:
  """The projection as sentence-transformers' Dense stores it (PyTorch layout, [out, in])."""
  kernel = np.asarray(jax.device_get(encoder.projection.kernel.get_value()), np.float32)
  bias = np.asarray(jax.device_get(encoder.projection.bias.get_value()), np.float32)
  return {"linear.weight": np.ascontiguousarray(kernel.T), "linear.bias": bias}


def write_hf_folder(folder: pathlib.Path, encoder: Encoder, tokenizer: tokenizers.Tokenizer, prefix: str) -> None:
  """The encoder, its tokenizer and its embedding recipe (see the module docstring)."""
  cfg = encoder.cfg
  folder.mkdir(parents=True, exist_ok=True)
  _write_json(folder / "config.json", hf_config(cfg))
  save_file(weights.export_tensors(encoder), str(folder / "model.safetensors"), metadata={"format": "pt"})
  write_tokenizer(folder, tokenizer, cfg)
  _write_json(folder / "sentence_bert_config.json", {"max_seq_length": cfg.max_seq_length, "do_lower_case": False})
  _write_json(folder / POOLING_DIR / "config.json", {
      "word_embedding_dimension": cfg.hidden_size,
      "pooling_mode_cls_token": cfg.pooling == "cls",
      "pooling_mode_mean_tokens": cfg.pooling == "mean",
      "pooling_mode_max_tokens": False,
      "pooling_mode_mean_sqrt_len_tokens": False,
      "include_prompt": True,  # pe_jax pools over the prefix tokens too
  })
  if encoder.projection is not None:
    _write_json(folder / DENSE_DIR / "config.json", {
        "in_features": cfg.hidden_size, "out_features": cfg.projection_dim, "bias": True,
        "activation_function": IDENTITY})
    save_file(projection_tensors(encoder), str(folder / DENSE_DIR / "model.safetensors"), metadata={"format": "pt"})
  # The prefix as sentence-transformers' default prompt: encode() then prepends it, as pe_jax does.
  _write_json(folder / "config_sentence_transformers.json", {
      "model_type": "SentenceTransformer",
      "prompts": {"query": prefix, "document": prefix},
      "default_prompt_name": "query" if prefix else None,
      "similarity_fn_name": "cosine",
  })
