r"""Embedding throughput: pe_jax vs sentence-transformers vs onnxruntime, same model, same posts, one run.

Rows: pe_jax (jitted JAX), sentence_transformers (PyTorch), onnxruntime (transformers' BertModel exported by
torch.onnx, pooled in NumPy) and pe_jax_onnx (pe_jax's own ONNX export, `pe_jax.export --format onnx`, run by
the `load_embedder.py` it ships, under onnxruntime).

  python scripts/bench_embed.py                      # 4,000 TweetEval posts, all-MiniLM-L6-v2
  python scripts/bench_embed.py --n 1000 --json out.json

Each system runs in a fresh subprocess twice over: "whole process" is import + load + (compile) +
embed, as a user's command would take; "steady state" re-embeds the same posts in that process after a
first pass. Peak memory is the subprocess's max RSS. The machine is noisy: read the ratios.
Needs the peers installed: pip install torch==2.13.0 sentence-transformers onnxruntime onnx.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from bench_common import minilm_folder, peak_rss_mb  # noqa: E402 - scripts/ is on sys.path

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_posts(data_dir: pathlib.Path, n: int) -> list[str]:
  posts = []
  for task in ("emoji", "sentiment", "offensive", "hate", "emotion", "irony"):
    with open(data_dir / "tweeteval" / task / "test_text.txt", encoding="utf-8") as f:
      posts.extend(line.rstrip("\n") for line in f)
  # Interleave tasks deterministically so lengths are mixed as in a real stream.
  return posts[:: max(1, len(posts) // n)][:n]




# --- workers: each runs in its own process --------------------------------------------------------


def worker_pe_jax(posts, batch_size):
  import jax

  compile_s = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, secs, **kw: compile_s.append(secs) if event == "/jax/core/compile/backend_compile_duration" else None)
  from pe_jax.serving.embedder import Embedder

  embedder = Embedder.from_pretrained("minilm-l6", batch_size=batch_size)
  first = embedder(posts)
  return first, lambda: embedder(posts), {"compile_s": sum(compile_s), "shapes": embedder.num_traces}


def worker_sentence_transformers(posts, batch_size):
  from sentence_transformers import SentenceTransformer

  model = SentenceTransformer(str(minilm_folder()), device="cpu")
  encode = lambda: model.encode(posts, batch_size=batch_size, normalize_embeddings=True)
  return encode(), encode, {}


def export_onnx(path: pathlib.Path) -> None:
  """The peer's own route: transformers' BertModel exported by torch.onnx with dynamic axes."""
  import torch
  from transformers import AutoModel

  bert = AutoModel.from_pretrained(str(minilm_folder())).eval()

  class Hidden(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
      return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                       token_type_ids=token_type_ids).last_hidden_state

  ids = torch.ones(2, 16, dtype=torch.long)
  with torch.no_grad():
    torch.onnx.export(
      Hidden().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")},
        opset_version=17, dynamo=False)


def worker_onnxruntime(posts, batch_size, onnx_path):
  import numpy as np
  import onnxruntime as ort
  import tokenizers

  session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
  tok = tokenizers.Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
  tok.enable_truncation(256)
  tok.no_padding()

  def encode():
    encs = tok.encode_batch(posts)
    order = np.argsort([len(e.ids) for e in encs])
    out = np.empty((len(posts), 384), np.float32)
    for s in range(0, len(order), batch_size):
      rows = order[s : s + batch_size]
      length = max(len(encs[r].ids) for r in rows)
      ids = np.zeros((len(rows), length), np.int64)
      mask = np.zeros_like(ids)
      for i, r in enumerate(rows):
        ids[i, : len(encs[r].ids)] = encs[r].ids
        mask[i, : len(encs[r].ids)] = 1
      hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
      pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
      out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return out

  return encode(), encode, {}


def export_pe_jax_onnx(folder: pathlib.Path) -> None:
  """What `python -m pe_jax.export --format onnx` writes, here for the pretrained alias the other rows run."""
  from pe_jax.export import ExportSource, export_source
  from pe_jax.models.loading import load_model

  encoder, tokenizer, prefix = load_model("minilm-l6")
  export_source(ExportSource(encoder=encoder, tokenizer=tokenizer.backend, prefix=prefix), "onnx", folder)


def worker_pe_jax_onnx(posts, batch_size, folder):
  import importlib.util

  # The folder's own standalone loader, as a user without pe_jax would run it.
  spec = importlib.util.spec_from_file_location("load_embedder", pathlib.Path(folder) / "load_embedder.py")
  loader = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loader)
  embed = loader.load(folder, batch_size=batch_size)
  encode = lambda: embed(posts)
  return encode(), encode, {}


def run_worker(args) -> None:
  posts = json.loads(pathlib.Path(args.posts).read_text())
  if args.worker == "pe_jax":
    first, again, extra = worker_pe_jax(posts, args.batch_size)
  elif args.worker == "sentence_transformers":
    first, again, extra = worker_sentence_transformers(posts, args.batch_size)
  elif args.worker == "pe_jax_onnx":
    first, again, extra = worker_pe_jax_onnx(posts, args.batch_size, args.pe_jax_onnx)
  else:
    first, again, extra = worker_onnxruntime(posts, args.batch_size, args.onnx)
  # From the parent's launch of this process: interpreter start-up and imports count, as for a user.
  whole = time.time() - args.launched_at
  runs = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    again()
    runs.append(time.perf_counter() - t)
  import numpy as np

  np.save(args.emb_out, np.asarray(first, np.float32))
  print(json.dumps({
      "whole_process_s": whole,
      "steady_s": min(runs),
      "peak_rss_mb": peak_rss_mb(),
      **extra,
  }))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", type=int, default=4000)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--data_dir", default=os.environ.get("PE_JAX_DATA_DIR", str(REPO.parent / "shared" / "data")))
  p.add_argument("--systems", default="pe_jax,sentence_transformers,onnxruntime,pe_jax_onnx")
  p.add_argument("--json", help="also write the results here")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  p.add_argument("--posts", help=argparse.SUPPRESS)
  p.add_argument("--onnx", help=argparse.SUPPRESS)
  p.add_argument("--pe_jax_onnx", help=argparse.SUPPRESS)
  p.add_argument("--emb_out", help=argparse.SUPPRESS)
  p.add_argument("--launched_at", type=float, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    return run_worker(args)

  import numpy as np

  tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_embed_"))
  posts = load_posts(pathlib.Path(args.data_dir), args.n)
  (tmp / "posts.json").write_text(json.dumps(posts))
  systems = args.systems.split(",")
  if "onnxruntime" in systems:
    export_onnx(tmp / "minilm.onnx")
  if "pe_jax_onnx" in systems:
    export_pe_jax_onnx(tmp / "pe_jax_onnx")

  results = {}
  for name in systems:
    cmd = [sys.executable, __file__, "--worker", name, "--posts", str(tmp / "posts.json"), "--onnx",
           str(tmp / "minilm.onnx"), "--pe_jax_onnx", str(tmp / "pe_jax_onnx"), "--emb_out", str(tmp / f"{name}.npy"),
           "--batch_size", str(args.batch_size), "--repeats", str(args.repeats), "--launched_at", str(time.time())]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode:
      sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["whole_texts_per_s"] = len(posts) / r["whole_process_s"]
    r["steady_texts_per_s"] = len(posts) / r["steady_s"]
    results[name] = r
    print(f"{name:>22}: whole process {r['whole_process_s']:6.1f}s ({r['whole_texts_per_s']:5.0f} texts/s), "
          f"steady {r['steady_texts_per_s']:5.0f} texts/s, peak RSS {r['peak_rss_mb']:.0f} MB"
          + (f", compile {r['compile_s']:.1f}s over {r['shapes']} shapes" if "compile_s" in r else ""), flush=True)

  ref = np.load(tmp / f"{systems[0]}.npy")
  for name in systems[1:]:
    other = np.load(tmp / f"{name}.npy")
    cos = (ref * other).sum(1)
    results[name]["min_cosine_vs_" + systems[0]] = float(cos.min())
  if "pe_jax" in results:
    for name in systems:
      if name == "pe_jax":
        continue
      w = results["pe_jax"]["whole_texts_per_s"] / results[name]["whole_texts_per_s"]
      s = results["pe_jax"]["steady_texts_per_s"] / results[name]["steady_texts_per_s"]
      results[f"ratio_pe_jax_vs_{name}"] = {"whole_process": w, "steady_state": s}
      print(f"pe_jax / {name}: whole process {w:.2f}x, steady state {s:.2f}x, "
            f"min cosine {results[name]['min_cosine_vs_pe_jax']:.6f}")
  print(f"{len(posts)} posts, batch size {args.batch_size}, {os.cpu_count()} CPU cores")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
