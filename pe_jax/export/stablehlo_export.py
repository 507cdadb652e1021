"""The embedding function as a serialized `jax.export` program, with the weights beside it.

  embedding.stablehlo   jax.export.Exported.serialize(): (params, input_ids, segment_ids, positions) ->
                        embeddings, texts packed several to a row as pe_jax's Embedder packs them
                        (`Encoder.embed_packed`: segment k + 1 is the call's text k, 0 padding;
                        positions restart at each text), shapes symbolic ("r, l": any rows, any length
                        up to max_seq_length); output [ceil(r * l / 4), D], row k for text k;
                        lowered for CPU and CUDA
  weights.npz           params, a {pe_jax parameter path: array} dict, the program's first argument

The weights are an argument, not constants baked into the program: the program stays a few hundred KB,
the same program serves any checkpoint of the architecture, and the weights stay inspectable.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from flax import nnx
from jax import export

from pe_jax.export.runtime_folder import write_runtime_files
from pe_jax.models import weights
from pe_jax.models.encoder import Encoder
from pe_jax.tokenization import texts_per_call

PROGRAM_FILE = "embedding.stablehlo"
WEIGHTS_FILE = "weights.npz"
PLATFORMS = ("cpu", "cuda")


def export_embedding(encoder: Encoder) -> tuple[export.Exported, dict[str, np.ndarray]]:
  """(the exported program, its params argument) for `encoder.embed_packed` on packed rows."""
  graphdef, state = nnx.split(encoder)
  flat = nnx.to_flat_state(state)
  params = {weights.path_str(k): np.asarray(jax.device_get(v.get_value())) for k, v in flat}

  def embed(params, input_ids, segment_ids, positions):
    state = nnx.from_flat_state([(k, v.replace(params[weights.path_str(k)])) for k, v in flat])
    num_texts = texts_per_call(*input_ids.shape)
    return nnx.merge(graphdef, state).embed_packed(input_ids, segment_ids, positions, num_texts)

  rows, length = export.symbolic_shape("r, l")
  tokens = jax.ShapeDtypeStruct((rows, length), np.int32)
  param_specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
  exported = export.export(jax.jit(embed), platforms=PLATFORMS)(param_specs, tokens, tokens, tokens)
  return exported, params


def write_stablehlo_folder(folder: pathlib.Path, encoder: Encoder, tokenizer, prefix: str) -> None:
  exported, params = export_embedding(encoder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / PROGRAM_FILE).write_bytes(exported.serialize())
  np.savez(folder / WEIGHTS_FILE, **params)
  write_runtime_files(folder, encoder, tokenizer, prefix, fmt="stablehlo",
                      files={"program": PROGRAM_FILE, "weights": WEIGHTS_FILE})
