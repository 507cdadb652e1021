"""Hugging Face tensors <-> our encoder parameters, driven by one table.

Each row names a Hugging Face tensor, our parameter path and how to transform it. `{i}` stands for the
layer number. Loading reads the table forwards; exporting reads it backwards, so the two cannot drift.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from pe_jax import sharding as sharding_lib
from pe_jax.models.encoder import Encoder, EncoderConfig

# (Hugging Face name, our path, transposed?) — PyTorch Linear stores [out, in]; ours is [in, out].
HF_TABLE: tuple[tuple[str, str, bool], ...] = (
    ("embeddings.word_embeddings.weight", "embeddings.word.embedding", False),
    ("embeddings.position_embeddings.weight", "embeddings.position.embedding", False),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type.embedding", False),
    ("embeddings.LayerNorm.weight", "embeddings.norm.scale", False),
    ("embeddings.LayerNorm.bias", "embeddings.norm.bias", False),
    *(
        row
        for hf_part, ours_part in (
            ("attention.self.query", "attention.query"),
            ("attention.self.key", "attention.key"),
            ("attention.self.value", "attention.value"),
            ("attention.output.dense", "attention.out"),
            ("intermediate.dense", "mlp_in"),
            ("output.dense", "mlp_out"),
        )
        for row in (
            (f"encoder.layer.{{i}}.{hf_part}.weight", f"layers.{{i}}.{ours_part}.kernel", True),
            (f"encoder.layer.{{i}}.{hf_part}.bias", f"layers.{{i}}.{ours_part}.bias", False),
        )
    ),
    *(
        row
        for hf_part, ours_part in (("attention.output.LayerNorm", "attention_norm"), ("output.LayerNorm", "mlp_norm"))
        for row in (
            (f"encoder.layer.{{i}}.{hf_part}.weight", f"layers.{{i}}.{ours_part}.scale", False),
            (f"encoder.layer.{{i}}.{hf_part}.bias", f"layers.{{i}}.{ours_part}.bias", False),
        )
    ),
)

# Tensors a checkpoint may carry that the embedding does not use.
IGNORED_HF = (r"embeddings\.position_ids", r"pooler\..*", r"cls\..*", r"lm_head\..*")
# Wrappers that Hugging Face model classes put in front of the encoder's names.
HF_PREFIXES = ("bert.", "roberta.", "model.", "encoder_model.")
# Our parameters that a plain pretrained encoder does not have: they start from their initialiser.
NEW_PARAMS = (r"projection\..*",)


class WeightLoadError(ValueError):
  """Every problem found while matching a checkpoint to the model, reported at once."""

  def __init__(self, source: str, problems: list[str]):
    self.problems = problems
    listing = "\n".join(f"  - {p}" for p in problems)
    super().__init__(f"cannot load weights from {source}: {len(problems)} problem(s)\n{listing}")


def _pattern(template: str) -> re.Pattern:
  return re.compile(re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)") + "$")


_FORWARD = [(_pattern(hf), ours, t) for hf, ours, t in HF_TABLE]
_BACKWARD = [(_pattern(ours), hf, t) for hf, ours, t in HF_TABLE]


def canonical_hf_name(name: str) -> str:
  """Strips model-class prefixes and renames TF-era LayerNorm gamma/beta."""
  for prefix in HF_PREFIXES:
    if name.startswith(prefix):
      name = name[len(prefix):]
      break
  return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def hf_to_ours(name: str) -> tuple[str, bool] | None:
  for pattern, ours, transposed in _FORWARD:
    if m := pattern.match(name):
      return ours.replace("{i}", m.group("i")) if "{i}" in ours else ours, transposed
  return None


def ours_to_hf(path: str) -> tuple[str, bool] | None:
  for pattern, hf, transposed in _BACKWARD:
    if m := pattern.match(path):
      return hf.replace("{i}", m.group("i")) if "{i}" in hf else hf, transposed
  return None


def path_str(path: tuple[Any, ...]) -> str:
  return ".".join(str(getattr(k, "key", k)) for k in path)


def abstract_encoder(cfg: EncoderConfig, mesh: jax.sharding.Mesh, seed: int = 0):
  """Graph definition and abstract (shape, dtype, sharding) state, without allocating weights."""
  with sharding_lib.activate(mesh):
    abstract = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(seed)))
    graphdef, state = nnx.split(abstract)
    shardings = nnx.get_named_sharding(state, mesh)
  return graphdef, state, shardings


def _init_subset(cfg: EncoderConfig, mesh, seed: int, paths: set[str]) -> dict[str, jax.Array]:
  """Initialises only `paths`; XLA drops the rest of the init, so a 250K-row vocabulary costs nothing."""

  def init():
    flat = nnx.to_flat_state(nnx.state(Encoder(cfg, rngs=nnx.Rngs(seed))))
    return {path_str(k): v.get_value() for k, v in flat if path_str(k) in paths}

  with sharding_lib.activate(mesh):
    return jax.jit(init)()


def load_encoder(
    cfg: EncoderConfig,
    tensors: Mapping[str, Any],
    *,
    mesh: jax.sharding.Mesh | None = None,
    source: str = "checkpoint",
    seed: int = 0,
) -> Encoder:
  """Builds the encoder on `mesh` from Hugging Face-named tensors (numpy arrays or lazy getters).

  `tensors` maps names to arrays, or to zero-argument callables returning arrays so that a
  safetensors file is read one tensor at a time. Every missing, unexpected or misshapen tensor is
  collected before one WeightLoadError is raised.
  """
  mesh = mesh or sharding_lib.single_device_mesh()
  graphdef, abstract, shardings = abstract_encoder(cfg, mesh, seed)
  wanted = {path_str(k): v for k, v in nnx.to_flat_state(abstract)}
  placement = {path_str(k): v.get_value() for k, v in nnx.to_flat_state(shardings)}

  problems: list[str] = []
  found: dict[str, tuple[str, bool]] = {}
  for name in tensors:
    canonical = canonical_hf_name(name)
    if any(re.fullmatch(p, canonical) for p in IGNORED_HF):
      continue
    mapped = hf_to_ours(canonical)
    if mapped is None or mapped[0] not in wanted:
      problems.append(f"unexpected tensor {name!r}: no parameter of this model takes it")
      continue
    found[mapped[0]] = (name, mapped[1])

  new = {p for p in wanted if p not in found and any(re.fullmatch(r, p) for r in NEW_PARAMS)}
  for path in sorted(set(wanted) - set(found) - new):
    hf = ours_to_hf(path)
    problems.append(f"missing tensor {hf[0] if hf else path!r} for parameter {path}")

  values: dict[str, Any] = {}
  for path, (name, transposed) in found.items():
    raw = tensors[name]
    array = np.asarray(raw() if callable(raw) else raw)
    if transposed:
      array = array.T
    expected = wanted[path].get_value().shape
    if array.shape != tuple(expected):
      problems.append(f"tensor {name!r} has shape {array.shape}{' (transposed)' if transposed else ''}, "
                      f"parameter {path} needs {tuple(expected)}")
      continue
    values[path] = jax.device_put(array.astype(wanted[path].get_value().dtype), placement[path])
  if problems:
    raise WeightLoadError(source, problems)

  if new:
    values.update(_init_subset(cfg, mesh, seed, new))
  flat = [(k, v.replace(values[path_str(k)])) for k, v in nnx.to_flat_state(abstract)]
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def param_arrays(module: nnx.Module, dtype=None) -> dict[str, np.ndarray]:
  """A module's parameters as host arrays keyed by our dotted paths (one transfer for all of them)."""
  flat = nnx.to_flat_state(nnx.state(module, nnx.Param))
  values = jax.device_get([var.get_value() for _, var in flat])
  return {path_str(key): np.asarray(value, dtype=dtype) for (key, _), value in zip(flat, values)}


def export_tensors(model: Encoder) -> dict[str, np.ndarray]:
  """Our parameters under Hugging Face names (PyTorch layout), the inverse of `load_encoder`."""
  out = {}
  for path, array in param_arrays(model, np.float32).items():
    mapped = ours_to_hf(path)
    if mapped is None:
      continue  # the projection is not part of a Hugging Face encoder; exporters write it separately
    # Contiguous: writers such as safetensors save a transposed view's memory, not its logical order.
    out[mapped[0]] = np.ascontiguousarray(array.T) if mapped[1] else array
  return out


def random_encoder(cfg: EncoderConfig, *, mesh: jax.sharding.Mesh | None = None, seed: int = 0) -> Encoder:
  """A freshly initialised encoder created already sharded (tests, training from scratch)."""
  with sharding_lib.activate(mesh or sharding_lib.single_device_mesh()):
    # One jitted program instead of an op-by-op init: seconds saved on a multi-device mesh.
    return nnx.jit(lambda: Encoder(cfg, rngs=nnx.Rngs(seed)))()

