"""Bad input to the export: unknown formats, missing or damaged checkpoints, occupied output folders, and
model features a format cannot hold — each refused or named, never silently dropped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from flax import nnx
from safetensors.numpy import load_file

from pe_jax import sharding as sharding_lib
from pe_jax.export import (FORMATS, CheckpointError, ExportSource, UnexpressibleError, export, export_source,
                           load_checkpoint)
from pe_jax.models import weights
from pe_jax.models.encoder import EncoderConfig
from pe_jax.models.heads import TaskHeads
from pe_jax.training.metrics_writer import read_metrics

TINY = dict(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
            max_position_embeddings=32, max_seq_length=16, projection_dim=8)


@pytest.fixture
def workdir_copy(trained_workdir, tmp_path):
  """A private copy to damage."""
  return shutil.copytree(trained_workdir, tmp_path / "workdir")


def tiny_source(tokenizer, **changes) -> ExportSource:
  encoder = weights.random_encoder(EncoderConfig(**{**TINY, **changes}))
  return ExportSource(encoder=encoder, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def tokenizer(trained_workdir):
  import tokenizers

  return tokenizers.Tokenizer.from_file(str(trained_workdir / "tokenizer.json"))


def test_unknown_format_lists_the_known_ones(tmp_path):
  with pytest.raises(ValueError, match="unknown export format 'tflite'; known formats: " + ", ".join(FORMATS)):
    export(tmp_path, "tflite", tmp_path / "out")  # checked before the workdir is even read
  assert not (tmp_path / "out").exists()


def test_missing_workdir_and_missing_files_are_named(tmp_path):
  with pytest.raises(CheckpointError, match=f"{tmp_path / 'nowhere'}: no such directory"):
    load_checkpoint(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match=f"{tmp_path / 'empty' / 'model.json'} is missing"):
    load_checkpoint(tmp_path / "empty")


def test_corrupt_model_description_names_file_and_line(workdir_copy):
  (workdir_copy / "model.json").write_text('{"encoder": {\n  "vocab_size": ,\n}')
  with pytest.raises(CheckpointError, match=r"model.json is corrupt: invalid JSON at line 2"):
    load_checkpoint(workdir_copy)


def test_corrupt_checkpoint_names_the_step_folder(workdir_copy):
  params = workdir_copy / "checkpoints" / "4" / "params"
  for path in params.rglob("*"):
    if path.is_file():
      path.write_bytes(b"\x00garbage" * 8)
  with pytest.raises(CheckpointError, match=f"{workdir_copy / 'checkpoints' / '4'}: cannot restore the parameters"):
    load_checkpoint(workdir_copy)


def test_missing_checkpoints_and_missing_step(workdir_copy, trained_workdir):
  with pytest.raises(CheckpointError, match=r"no checkpoint at step 3; have steps \[2, 4\]"):
    load_checkpoint(trained_workdir, step=3)
  shutil.rmtree(workdir_copy / "checkpoints")
  with pytest.raises(CheckpointError, match=f"{workdir_copy / 'checkpoints'}: no checkpoints directory"):
    load_checkpoint(workdir_copy)


def test_step_and_best_choose_the_checkpoint(trained_workdir):
  assert load_checkpoint(trained_workdir).step == 4
  assert load_checkpoint(trained_workdir, step=2).step == 2
  metric = "eval/triplet_acc/mean"
  scores = {r["step"]: r[metric] for r in read_metrics(trained_workdir) if metric in r}
  assert sorted(scores) == [2, 4]
  assert load_checkpoint(trained_workdir, best=True).step == max((v, s) for s, v in scores.items())[1]
  with pytest.raises(ValueError, match="--step or --best, not both"):
    load_checkpoint(trained_workdir, step=2, best=True)


def test_non_empty_out_is_refused_unless_overwrite(trained_workdir, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  with pytest.raises(FileExistsError, match=f"--out {out} exists and is not empty; pass --overwrite"):
    export(trained_workdir, "hf", out)
  assert (out / "keep.txt").read_text() == "mine"
  with pytest.raises(CheckpointError):  # a failed export leaves the old OUT as it was
    export(trained_workdir, "hf", out, step=3, overwrite=True)
  assert (out / "keep.txt").exists()
  result = export(trained_workdir, "hf", out, step=2, overwrite=True)
  assert result.step == 2 and not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
  assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind


def test_out_that_holds_the_workdir_is_refused(workdir_copy):
  with pytest.raises(ValueError, match="is or contains the workdir"):
    export(workdir_copy, "onnx", workdir_copy.parent, overwrite=True)
  assert (workdir_copy / "model.json").exists()


def test_position_offset_a_hf_config_cannot_say_is_named(tokenizer, tmp_path):
  source = tiny_source(tokenizer, position_offset=3)
  for fmt in ("hf", "sentence-transformers"):
    with pytest.raises(UnexpressibleError, match="position_offset 3 with pad_token_id 0"):
      export_source(source, fmt, tmp_path / fmt)
    assert not (tmp_path / fmt).exists()


def test_unnormalised_model_refused_by_hf_kept_by_sentence_transformers(tokenizer, tmp_path):
  source = tiny_source(tokenizer, normalize=False)
  with pytest.raises(UnexpressibleError, match="normalize=False"):
    export_source(source, "hf", tmp_path / "hf")
  folder = export_source(source, "sentence-transformers", tmp_path / "st").out
  assert [m["path"] for m in json.loads((folder / "modules.json").read_text())] == ["", "1_Pooling", "2_Dense"]
  from pe_jax.models.loading import load_model

  assert load_model(str(folder))[0].cfg.normalize is False


def test_head_projection_is_kept_or_named(tokenizer, tmp_path):
  specs = [("topic", {"projection_dim": 4}), ("plain", {})]
  with sharding_lib.activate(sharding_lib.single_device_mesh()):
    heads = TaskHeads(specs, dim=TINY["projection_dim"], rngs=nnx.Rngs(0))
  source = tiny_source(tokenizer)
  source.heads, source.head_specs = heads, specs
  st = export_source(source, "sentence-transformers", tmp_path / "st").out
  tensors = load_file(str(st / "task_heads" / "model.safetensors"))
  assert tensors["topic.projection.kernel"].shape == (8, 4) and "plain.projection.kernel" not in tensors
  for fmt in ("hf", "onnx", "stablehlo"):
    (left_out,) = export_source(source, fmt, tmp_path / fmt).left_out
    assert "task heads [topic (projection to 4), plain]" in left_out


def test_command_line(trained_workdir, tmp_path):
  run = lambda *flags: subprocess.run([sys.executable, "-m", "pe_jax.export", f"--workdir={trained_workdir}", *flags],
                                      capture_output=True, text=True, timeout=300, env={**os.environ})
  bad = run("--format=tflite", f"--out={tmp_path / 'bad'}")
  assert bad.returncode == 2  # a name from a fixed list: the command line is wrong
  assert "unknown export format 'tflite'; known formats: sentence-transformers, hf, stablehlo, onnx" in bad.stderr
  out = tmp_path / "hf"
  out.mkdir()
  (out / "old").write_text("")
  good = run("--format=hf", f"--out={out}", "--step=2", "--overwrite")
  assert good.returncode == 0, good.stderr[-3000:]
  assert f"exported {trained_workdir} step 2 as hf -> {out}" in good.stdout
  assert "not exported: task heads [" in good.stderr
  assert json.loads((out / "pe_jax_export.json").read_text())["step"] == 2


def test_dense_with_an_activation_is_refused_on_read(tokenizer, tmp_path):
  """pe_jax's projection is linear: a sentence-transformers Dense with Tanh must not load as if it were."""
  from pe_jax.models.loading import load_model

  folder = export_source(tiny_source(tokenizer), "sentence-transformers", tmp_path / "st").out
  dense_config = folder / "2_Dense" / "config.json"
  dense_config.write_text(json.dumps({**json.loads(dense_config.read_text()),
                                      "activation_function": "torch.nn.modules.activation.Tanh"}))
  with pytest.raises(ValueError, match=f"{dense_config}: activation_function 'torch.nn.modules.activation.Tanh'"):
    load_model(str(folder))
