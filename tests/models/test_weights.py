"""Hugging Face tensors -> encoder and back: numerics, round trip, error reporting, names and layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from fixtures import HIDDEN, LAYERS, VARIANTS, numpy_embed, run_encoder, tiny_tensors, write_tiny_hf_folder
from pe_jax.models import weights
from pe_jax.models.encoder import EncoderConfig
from pe_jax.models.loading import load_model

TEXTS = ["Hello world!", "We are hiring: a great data team, today.", "", "zq"]


def params(model) -> dict[str, np.ndarray]:
  return {weights.path_str(k): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def config_of(folder, **overrides) -> EncoderConfig:
  return EncoderConfig.from_hf_config(json.loads((folder / "config.json").read_text()), max_seq_length=24,
                                      **overrides)


@pytest.mark.parametrize("variant", ["bert", "xlmr"])
def test_hf_folder_gives_the_numpy_reference(variant, tiny_bert_dir, tiny_xlmr_dir):
  folder = {"bert": tiny_bert_dir, "xlmr": tiny_xlmr_dir}[variant]
  model, tokenizer, prefix = load_model(str(folder))
  v = VARIANTS[variant]
  assert (prefix, model.cfg.pooling, model.cfg.position_offset, tokenizer.pad_id) == ("", v["pooling"], v["offset"],
                                                                                      v["pad"])
  ids, _ = tokenizer.encode(TEXTS)
  want = np.stack([numpy_embed(tiny_tensors(variant), list(r), offset=v["offset"], pooling=v["pooling"]) for r in ids])
  np.testing.assert_allclose(run_encoder(model, ids), want, rtol=1e-4, atol=2e-5)


def test_export_round_trips_exactly(tiny_bert_dir):
  model, _, _ = load_model(str(tiny_bert_dir))
  exported = weights.export_tensors(model)
  original = tiny_tensors("bert")
  assert sorted(exported) == sorted(original)
  for name, array in original.items():
    np.testing.assert_array_equal(exported[name], array, err_msg=name)
    assert exported[name].flags.c_contiguous, f"{name}: file writers would save a transposed view's memory"
  again = weights.load_encoder(model.cfg, exported)
  first, second = params(model), params(again)
  assert first.keys() == second.keys()
  for path in first:
    np.testing.assert_array_equal(first[path], second[path], err_msg=path)


def test_one_error_names_every_problem(tiny_bert_dir):
  tensors = tiny_tensors("bert")
  del tensors["encoder.layer.1.output.dense.bias"]
  tensors["encoder.layer.0.attention.self.key.weight"] = np.zeros((HIDDEN, HIDDEN - 1), np.float32)
  tensors["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((2,), np.float32)
  with pytest.raises(weights.WeightLoadError) as err:
    weights.load_encoder(config_of(tiny_bert_dir), tensors, source="my.safetensors")
  message = str(err.value)
  assert len(err.value.problems) == 3, message
  assert "cannot load weights from my.safetensors: 3 problem(s)" in message
  assert "missing tensor 'encoder.layer.1.output.dense.bias' for parameter layers.1.mlp_out.bias" in message
  assert ("tensor 'encoder.layer.0.attention.self.key.weight' has shape (31, 32) (transposed), "
          "parameter layers.0.attention.key.kernel needs (32, 32)") in message
  assert "unexpected tensor 'encoder.layer.0.attention.self.rotary.weight'" in message


def test_model_class_prefixes_tf_names_and_ignored_heads_load(tiny_bert_dir):
  plain = tiny_tensors("bert")
  renamed = {"bert." + name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"):
             array for name, array in plain.items()}
  assert sum("gamma" in n for n in renamed) == 1 + 2 * LAYERS

  def never_read():
    raise AssertionError("an ignored tensor was read")

  # Tensors the embedding does not use are skipped without being read (they are lazy getters here).
  for extra in ("bert.embeddings.position_ids", "bert.pooler.dense.weight", "cls.predictions.bias",
                "lm_head.dense.weight"):
    renamed[extra] = never_read
  cfg = config_of(tiny_bert_dir)
  want, got = params(weights.load_encoder(cfg, plain)), params(weights.load_encoder(cfg, renamed))
  for path in want:
    np.testing.assert_array_equal(got[path], want[path], err_msg=path)


def test_tensors_may_be_lazy_getters(tiny_bert_dir):
  reads = []
  lazy = {name: (lambda n=name, a=array: reads.append(n) or a) for name, array in tiny_tensors("bert").items()}
  model = weights.load_encoder(config_of(tiny_bert_dir), lazy)
  assert sorted(reads) == sorted(lazy)  # each read exactly once
  np.testing.assert_array_equal(params(model)["layers.1.mlp_in.kernel"],
                                tiny_tensors("bert")["encoder.layer.1.intermediate.dense.weight"].T)


def test_sharded_safetensors_index_folder_loads(tmp_path, tiny_bert_dir):
  folder = write_tiny_hf_folder(tmp_path / "sharded", "bert", shards=3)
  assert len(list(folder.glob("model-*.safetensors"))) == 3 and not (folder / "model.safetensors").exists()
  want, got = params(load_model(str(tiny_bert_dir))[0]), params(load_model(str(folder))[0])
  for path in want:
    np.testing.assert_array_equal(got[path], want[path], err_msg=path)
  (folder / "model-00002-of-00003.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match=r"names shards that are not in .*\['model-00002-of-00003.safetensors'\]"):
    load_model(str(folder))


def test_projection_is_created_new_while_the_rest_loads(tiny_bert_dir):
  model, _, _ = load_model(str(tiny_bert_dir), projection_dim=8)
  loaded = params(model)
  kernel, bias = loaded["projection.kernel"], loaded["projection.bias"]
  assert kernel.shape == (HIDDEN, 8) and 0.005 < kernel.std() < 0.05  # truncated normal, stddev 0.02
  np.testing.assert_array_equal(bias, np.zeros(8))
  plain = params(load_model(str(tiny_bert_dir))[0])
  for path, array in plain.items():
    np.testing.assert_array_equal(loaded[path], array, err_msg=path)
  # The new head is reproducible: the same seed (0, load_model's default) gives the same kernel.
  again = params(weights.load_encoder(model.cfg, tiny_tensors("bert"), seed=0))["projection.kernel"]
  np.testing.assert_array_equal(again, kernel)
  assert run_encoder(model, [[2, 13, 3]]).shape == (1, 8)
  assert "projection.kernel" not in weights.export_tensors(model)


def test_name_table_maps_both_ways():
  for hf, ours, transposed in weights.HF_TABLE:
    hf_name, our_path = hf.replace("{i}", "3"), ours.replace("{i}", "3")
    assert weights.hf_to_ours(hf_name) == (our_path, transposed)
    assert weights.ours_to_hf(our_path) == (hf_name, transposed)
  assert weights.hf_to_ours("encoder.layer.0.attention.self.query.weight.extra") is None
  assert weights.canonical_hf_name("roberta.encoder.layer.0.output.LayerNorm.gamma") == (
      "encoder.layer.0.output.LayerNorm.weight")
