"""One call from a model spec to a ready encoder and tokenizer, whatever the spec names."""

from __future__ import annotations

import jax
import numpy as np

from pe_jax import sharding as sharding_lib
from pe_jax.models import pretrained, trained, weights
from pe_jax.models.encoder import Encoder
from pe_jax.tokenization import TextTokenizer


def load_model(spec: str, *, mesh: jax.sharding.Mesh | None = None, **overrides) -> tuple[Encoder, TextTokenizer, str]:
  """(encoder, tokenizer, text prefix) for an alias, Hugging Face folder, hub id or training workdir.

  `overrides` replace `EncoderConfig` fields of a pretrained base (e.g. dtype="bfloat16").
  """
  mesh = mesh or sharding_lib.single_device_mesh()
  if trained.is_workdir(spec):
    return trained.load_trained_model(spec, mesh=mesh, **overrides)
  source = pretrained.resolve(spec, **overrides)
  model = weights.load_encoder(source.config, source.tensors, mesh=mesh, source=source.description)
  if source.projection is not None:
    _set_projection(model, source.projection, source.description)
  tokenizer = TextTokenizer(source.tokenizer, max_length=source.config.max_seq_length,
                            pad_id=source.config.pad_token_id)
  return model, tokenizer, source.prefix


def _set_projection(model: Encoder, projection, description: str) -> None:
  """Puts a sentence-transformers Dense module's weights into the projection `load_encoder` initialised."""
  for name in ("kernel", "bias"):
    variable = getattr(model.projection, name)
    current = variable.get_value()
    value = np.asarray(projection[name])
    if value.shape != current.shape:
      raise weights.WeightLoadError(description, [
          f"Dense {name} has shape {value.shape}, the projection needs {current.shape}"])
    variable.set_value(jax.device_put(value.astype(current.dtype), current.sharding))
