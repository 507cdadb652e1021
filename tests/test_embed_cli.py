"""`python -m pe_jax.embed` end to end on the tiny BERT folder, in a subprocess as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pe_jax.serving.post_files import read_jsonl
from pe_jax.serving.embedder import Embedder


def embed_cli(model_dir, input_path, output_path, *flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "pe_jax.embed", f"--model={model_dir}", f"--input={input_path}",
       f"--output={output_path}", "--batch_size=8", *flags],
      capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def python_api(tiny_bert_dir) -> Embedder:
  """The in-process embedder whose rows the CLI must reproduce."""
  return Embedder.from_pretrained(str(tiny_bert_dir))


def test_text_file_to_npy_with_invalid_utf8_replaced(tiny_bert_dir, tmp_path, python_api):
  lines = ["hello world", "", "we are hiring a great data team today!", "caf\u00e9 news", "the post"]
  raw = "\n".join(lines).encode("utf-8") + b"\nbroken \xff\xfe bytes\r\nlast line\n"
  src = tmp_path / "posts.txt"
  src.write_bytes(raw)
  out = tmp_path / "out" / "posts.npy"
  proc = embed_cli(tiny_bert_dir, src, out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  vectors = np.load(out)
  assert vectors.shape == (7, 32) and vectors.dtype == np.float32
  # Each invalid byte becomes U+FFFD; "\r\n" line ends are stripped like "\n".
  texts = lines + ["broken \ufffd\ufffd bytes", "last line"]
  np.testing.assert_allclose(vectors, python_api(texts), rtol=1e-5, atol=1e-6)
  assert "embedded 7 posts" in proc.stdout and "empty 1" in proc.stdout and "invalid unicode replaced 1" in proc.stdout
  assert not out.with_suffix(".ids.json").exists()


def test_jsonl_keeps_ids_in_order(tiny_bert_dir, tmp_path, python_api):
  records = [{"id": "b7", "text": "hello world"}, {"id": 3, "text": "the news today", "extra": 1},
             {"text": "no id here"}, {"id": "a1", "text": ""}]
  src = tmp_path / "posts.jsonl"
  src.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in records[2:]))
  out = tmp_path / "posts.npy"
  proc = embed_cli(tiny_bert_dir, src, out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # A record without an id gets its line number (blank lines count).
  assert json.loads((tmp_path / "posts.ids.json").read_text()) == ["b7", 3, 4, "a1"]
  vectors = np.load(out)
  np.testing.assert_allclose(vectors, python_api([r["text"] for r in records]),
                             rtol=1e-5, atol=1e-6)


def test_malformed_jsonl_line_fails_naming_the_line(tiny_bert_dir, tmp_path):
  src = tmp_path / "posts.jsonl"
  src.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": "broken\n')
  out = tmp_path / "posts.npy"
  proc = embed_cli(tiny_bert_dir, src, out)
  assert proc.returncode != 0
  assert f"{src}:3: not valid JSON" in proc.stderr
  assert not out.exists()


@pytest.mark.parametrize("line, message", [
    ('{"body": "x"}', r"posts.jsonl:2: no 'text' field"),
    ('["text"]', r"posts.jsonl:2: no 'text' field"),
    ('{"text": 5}', r"posts.jsonl:2: field 'text' is int, not a string"),
])
def test_jsonl_record_errors_name_line_and_field(tmp_path, line, message):
  src = tmp_path / "posts.jsonl"
  src.write_text('{"text": "ok"}\n' + line + "\n")
  ids: list = []
  with pytest.raises(ValueError, match=message):
    list(read_jsonl(src, "text", "id", ids))
  assert ids == [1]


def test_overwrite_replaces_the_output_and_drops_stale_ids(tiny_bert_dir, tmp_path, python_api):
  out = tmp_path / "posts.npy"
  out.write_bytes(b"an older output")
  out.with_suffix(".ids.json").write_text('["from", "a", "jsonl", "run"]')
  src = tmp_path / "posts.txt"
  src.write_text("hello world\nthe news\n")
  proc = embed_cli(tiny_bert_dir, src, out, "--overwrite")
  assert proc.returncode == 0, proc.stderr[-3000:]
  np.testing.assert_allclose(np.load(out), python_api(["hello world", "the news"]), rtol=1e-5, atol=1e-6)
  assert not out.with_suffix(".ids.json").exists() and not list(tmp_path.glob("*.partial"))
