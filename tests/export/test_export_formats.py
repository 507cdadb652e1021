"""Every export format read back by its own runtime matches `pe_jax` on the tiny trained workdir, and on a
tiny XLM-R style encoder with CLS pooling, a projection and a "query: " prefix."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from pe_jax.data.load import load_split
from pe_jax.export import FORMATS, ExportSource, export, export_source
from pe_jax.export.standalone_embedder import LOADER_FILE
from pe_jax.models.loading import load_model
from pe_jax.serving.embedder import Embedder
from pe_jax.tokenization import TextTokenizer
from fixtures import write_tiny_hf_folder

MIN_COSINE = 0.9999
EDGE_TEXTS = ["", "   ", "caf\u00e9 \U0001F600 na\u00efve", "word " * 40]  # empty, blank, non-ASCII, truncated


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
  assert a.shape == b.shape
  return float((a * b).sum(1).min())


def params(encoder) -> dict[str, np.ndarray]:
  return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(encoder, nnx.Param))}


def exported_runtime(folder: pathlib.Path):
  """The `load_embedder.py` copied into an exported folder, imported from there."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(f"load_embedder_{folder.name}", folder / LOADER_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.load(folder, batch_size=8)


@pytest.fixture(scope="module")
def texts(trained_workdir, shared_data_dir, tfds_dir) -> list[str]:
  posts = load_split("tweeteval/emotion", "test", data_dir=shared_data_dir, tfds_dir=tfds_dir).texts[:36]
  return list(posts) + EDGE_TEXTS


@pytest.fixture(scope="module")
def reference(trained_workdir, texts) -> np.ndarray:
  return Embedder.from_pretrained(str(trained_workdir), batch_size=8)(texts)


@pytest.fixture(scope="module")
def exports(trained_workdir, tmp_path_factory) -> dict[str, pathlib.Path]:
  root = tmp_path_factory.mktemp("exports")
  return {fmt: export(trained_workdir, fmt, root / fmt).out for fmt in FORMATS}


def test_sentence_transformers_folder_loads_in_sentence_transformers(exports, texts, reference):
  from sentence_transformers import SentenceTransformer

  folder = exports["sentence-transformers"]
  model = SentenceTransformer(str(folder), device="cpu")
  assert min_cosine(model.encode(texts, batch_size=8), reference) >= MIN_COSINE
  assert [m["path"] for m in json.loads((folder / "modules.json").read_text())] == [
      "", "1_Pooling", "2_Dense", "3_Normalize"]


def test_sentence_transformers_folder_reads_back_into_pe_jax(exports, texts, reference):
  assert min_cosine(Embedder.from_pretrained(str(exports["sentence-transformers"]), batch_size=8)(texts),
                    reference) >= MIN_COSINE


def test_task_heads_travel_in_their_own_folder(exports, trained_workdir):
  heads = exports["sentence-transformers"] / "task_heads"
  described = json.loads((heads / "config.json").read_text())
  names = [h["name"] for h in described["heads"]]
  assert sorted(names) == ["emotion", "irony", "stance_climate"]
  tensors = load_file(str(heads / "model.safetensors"))
  assert sorted(tensors) == sorted(f"{n}.{p}" for n in names for p in ("bias", "log_scale"))
  for head in described["heads"]:
    assert head["bias"] == pytest.approx(float(tensors[f"{head['name']}.bias"]))
    assert head["scale"] == pytest.approx(float(np.exp(tensors[f"{head['name']}.log_scale"])), rel=1e-6)


def test_model_card_records_base_tasks_budget_eval_and_data(exports, trained_workdir):
  card = (exports["sentence-transformers"] / "README.md").read_text()
  evals = [r for r in map(json.loads, (trained_workdir / "metrics.jsonl").read_text().splitlines())
           if "eval/triplet_acc/mean" in r]
  assert evals[-1]["step"] == 4
  assert "the evaluation at step 4 (this checkpoint)" in card
  assert f"| triplet_acc/mean | {evals[-1]['eval/triplet_acc/mean']:.4f} |" in card
  for dataset in ("tweeteval/emotion", "tweeteval/irony", "tweeteval/stance_climate"):
    assert f"- {dataset}\n" in card  # front matter `datasets:`
    assert f"`{dataset}` split `train`" in card
  assert "randomly initialised" in card and "base_model:" not in card  # a smoke run claims no base weights
  assert "Steps: 4 of 4 planned" in card and "scheme `temperature` (T = 2.0)" in card


def test_hf_folder_reimports_exactly_and_names_the_heads_it_leaves_out(exports, trained_workdir):
  original, _, _ = load_model(str(trained_workdir))
  for fmt in ("hf", "sentence-transformers"):
    reimported, _, prefix = load_model(str(exports[fmt]))
    assert reimported.cfg == original.cfg and prefix == ""
    a, b = params(original), params(reimported)
    assert a.keys() == b.keys()
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=f"{fmt}: {name}")
  left_out = json.loads((exports["hf"] / "pe_jax_export.json").read_text())["left_out"]
  assert len(left_out) == 1 and "task heads [emotion, irony, stance_climate]" in left_out[0]
  assert not (exports["hf"] / "modules.json").exists() and not (exports["hf"] / "task_heads").exists()


def test_hf_folder_loads_in_transformers(exports):
  from transformers import AutoModel, AutoTokenizer

  folder = exports["hf"]
  model = AutoModel.from_pretrained(str(folder))
  tokenizer = AutoTokenizer.from_pretrained(str(folder))
  assert type(model).__name__ == "BertModel"
  assert tokenizer("a post")["input_ids"][0] == tokenizer.cls_token_id == 101


def test_onnx_runs_in_onnxruntime(exports, texts, reference):
  assert min_cosine(exported_runtime(exports["onnx"])(texts), reference) >= MIN_COSINE


def test_stablehlo_runs_in_a_fresh_process_without_pe_jax(exports, texts, reference, tmp_path):
  """pe_jax is installed editable, so PYTHONPATH alone cannot hide it: the child blocks the import."""
  folder = exports["stablehlo"]
  posts = tmp_path / "posts.txt"
  posts.write_text("\n".join(texts) + "\n", encoding="utf-8")
  out = tmp_path / "out.npy"
  script = ("import runpy, sys\n"
            "for name in ('pe_jax', 'flax', 'torch'): sys.modules[name] = None  # import -> ImportError\n"
            f"sys.argv = ['load_embedder.py', '--input', {str(posts)!r}, '--output', {str(out)!r}]\n"
            f"runpy.run_path({str(folder / LOADER_FILE)!r}, run_name='__main__')\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert min_cosine(np.load(out), reference) >= MIN_COSINE


def test_stablehlo_program_takes_packed_rows_of_any_shape(exports):
  from jax import export as jax_export

  exported = jax_export.deserialize(bytearray((exports["stablehlo"] / "embedding.stablehlo").read_bytes()))
  ids, segments, positions = (a.shape for a in exported.in_avals[-3:])
  assert [str(d) for d in ids] == [str(d) for d in segments] == [str(d) for d in positions] == ["r", "l"]
  assert [str(d) for d in exported.out_avals[0].shape][0] == str(-(-(ids[0] * ids[1]) // 4))
  assert set(exported.platforms) == {"cpu", "cuda"}


def test_stablehlo_loader_packs_long_texts_into_rows_of_the_token_limit(exports, texts, reference):
  embed = exported_runtime(exports["stablehlo"])
  embed.row_length = 8  # below the 24-token limit: longer texts take the second row shape
  assert any(len(r) > 8 for r in embed.token_ids(texts)) and any(len(r) <= 8 for r in embed.token_ids(texts))
  assert min_cosine(embed(texts), reference) >= MIN_COSINE


@pytest.fixture(scope="module")
def xlmr_source(tiny_xlmr_dir) -> ExportSource:
  encoder, tokenizer, _ = load_model(str(tiny_xlmr_dir), projection_dim=8)
  return ExportSource(encoder=encoder, tokenizer=tokenizer.backend, prefix="query: ")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_xlmr_cls_projection_and_prefix_survive_every_format(xlmr_source, fmt, tmp_path):
  texts = ["hello world", "the data team is hiring", "", "news " * 30]
  cfg = xlmr_source.encoder.cfg
  tokenizer = TextTokenizer(xlmr_source.tokenizer, max_length=cfg.max_seq_length, pad_id=cfg.pad_token_id)
  reference = Embedder(xlmr_source.encoder, tokenizer, prefix="query: ", batch_size=4)(texts)
  folder = export_source(xlmr_source, fmt, tmp_path / fmt).out
  if fmt in ("onnx", "stablehlo"):
    got = exported_runtime(folder)(texts)
  else:
    encoder, _, prefix = load_model(str(folder))
    assert prefix == "query: " and encoder.cfg == cfg
    got = Embedder.from_pretrained(str(folder), batch_size=4)(texts)
  assert min_cosine(got, reference) >= MIN_COSINE
  if fmt == "sentence-transformers":  # the prefix is its default prompt, so plain encode() prepends it
    from sentence_transformers import SentenceTransformer

    assert min_cosine(SentenceTransformer(str(folder), device="cpu").encode(texts), reference) >= MIN_COSINE


def test_a_bert_model_with_xlmr_tokens_exports_a_tokenizer_that_pads(tmp_path):
  """multilingual-e5's layout: the special tokens come from the tokenizer's vocabulary, not the model's family,
  so transformers and sentence-transformers can batch texts of different lengths."""
  from sentence_transformers import SentenceTransformer
  from transformers import AutoTokenizer

  encoder, tokenizer, _ = load_model(str(write_tiny_hf_folder(tmp_path / "e5", "e5")))
  folder = export_source(ExportSource(encoder=encoder, tokenizer=tokenizer.backend, prefix=""), "sentence-transformers",
                         tmp_path / "out").out
  hf_tokenizer = AutoTokenizer.from_pretrained(str(folder))
  assert (hf_tokenizer.pad_token, hf_tokenizer.pad_token_id, hf_tokenizer.cls_token) == ("<pad>", 1, "<s>")
  texts = ["hello world", "the data team is hiring today"]
  reference = Embedder(encoder, TextTokenizer(tokenizer.backend, max_length=encoder.cfg.max_seq_length,
                                              pad_id=encoder.cfg.pad_token_id))(texts)
  assert min_cosine(SentenceTransformer(str(folder), device="cpu").encode(texts), reference) >= MIN_COSINE
