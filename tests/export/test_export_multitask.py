"""The real MiniLM-based run (workdirs/multitask) through every format, on 200 real posts: each format's
embeddings match `python -m pe_jax.embed --model WORKDIR`, and the Hugging Face folder re-imports exactly."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from pe_jax.data.load import load_split
from pe_jax.export import FORMATS, export
from pe_jax.export.standalone_embedder import LOADER_FILE
from pe_jax.models.loading import load_model

from test_export_formats import MIN_COSINE, exported_runtime, min_cosine, params

WORKDIR = pathlib.Path(__file__).resolve().parents[2] / "workdirs" / "multitask"

pytestmark = pytest.mark.slow


def embed_cli(model: pathlib.Path, posts: pathlib.Path, out: pathlib.Path) -> np.ndarray:
  proc = subprocess.run([sys.executable, "-m", "pe_jax.embed", f"--model={model}", f"--input={posts}",
                         f"--output={out}"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return np.load(out)


def test_every_format_matches_pe_jax_on_200_real_posts(shared_data_dir, tfds_dir, tmp_path):
  if not (WORKDIR / "model.json").exists():
    pytest.skip(f"{WORKDIR} is not here (trained locally, not in git)")
  texts = list(load_split("tweeteval/emotion", "test", data_dir=shared_data_dir, tfds_dir=tfds_dir).texts[:200])
  assert len(texts) == 200 and all("\n" not in t for t in texts)
  posts = tmp_path / "posts.txt"
  posts.write_text("\n".join(texts) + "\n", encoding="utf-8")
  reference = embed_cli(WORKDIR, posts, tmp_path / "reference.npy")
  folders = {fmt: export(WORKDIR, fmt, tmp_path / fmt).out for fmt in FORMATS}

  from sentence_transformers import SentenceTransformer

  cosines = {
      "sentence-transformers (SentenceTransformer)": min_cosine(
          SentenceTransformer(str(folders["sentence-transformers"]), device="cpu").encode(texts), reference),
      "sentence-transformers (pe_jax.embed)": min_cosine(
          embed_cli(folders["sentence-transformers"], posts, tmp_path / "st.npy"), reference),
      "hf (pe_jax.embed)": min_cosine(embed_cli(folders["hf"], posts, tmp_path / "hf.npy"), reference),
      "onnx (onnxruntime)": min_cosine(exported_runtime(folders["onnx"])(texts), reference),
  }
  script = ("import runpy, sys\n"
            "for name in ('pe_jax', 'flax', 'torch'): sys.modules[name] = None\n"
            f"sys.argv = ['load_embedder.py', '--input', {str(posts)!r}, '--output', {str(tmp_path / 'shlo.npy')!r}]\n"
            f"runpy.run_path({str(folders['stablehlo'] / LOADER_FILE)!r}, run_name='__main__')\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  cosines["stablehlo (fresh process)"] = min_cosine(np.load(tmp_path / "shlo.npy"), reference)
  print("\nmin cosine vs pe_jax.embed --model WORKDIR over 200 posts:")
  for name, value in cosines.items():
    print(f"  {name:45s} {value:.7f}")
  assert min(cosines.values()) >= MIN_COSINE, cosines

  original, _, _ = load_model(str(WORKDIR))
  reimported, _, _ = load_model(str(folders["hf"]))
  assert reimported.cfg == original.cfg
  a, b = params(original), params(reimported)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
