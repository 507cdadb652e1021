r"""Embedding throughput: pe_jax vs sentence-transformers vs onnxruntime, same model, same posts, one run.

Rows: pe_jax (jitted JAX), sentence_transformers (PyTorch), onnxruntime (transformers' BertModel exported by
torch.onnx, pooled in NumPy) and pe_jax_onnx (pe_jax's own ONNX export, `pe_jax.export --format onnx`, run by
the `load_embedder.py` it ships, under onnxruntime).

  python scripts/bench_embed.py                      # 4,000 TweetEval posts, all-MiniLM-L6-v2
  python scripts/bench_embed.py --n 1000 --json out.json
  python scripts/bench_embed.py --systems pe_jax,onnxruntime:16,onnxruntime:64   # peers at other batch sizes

Each system runs in a fresh subprocess twice over: "whole process" is import + load + (compile) +
embed, as a user's command would take; "steady state" re-embeds the same posts in that process after a
first pass. The cold start is broken down: interpreter start and imports, weight load, the first batch
(`--batch_size` posts; for pe_jax the XLA compilation in it is shown apart, with a cold cache). Peak
memory is the subprocess's max RSS. The machine is noisy: read the ratios. `SYSTEM:B` runs a peer at
batch size B; pe_jax's calls are `--rows` packed rows of 128 tokens, whatever the posts' lengths.
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


# Each worker imports, marks "import", loads the model, marks "load" and returns texts -> embeddings.


def worker_pe_jax(mark, rows):
  import jax

  compile_s = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, secs, **kw: compile_s.append(secs) if event == "/jax/core/compile/backend_compile_duration" else None)
  from pe_jax.serving.embedder import Embedder

  mark("import")
  embedder = Embedder.from_pretrained("minilm-l6", batch_size=rows)
  mark("load")
  return embedder, lambda: {"compile_s": sum(compile_s), "shapes": embedder.num_traces}


def worker_sentence_transformers(mark, batch_size):
  from sentence_transformers import SentenceTransformer

  mark("import")
  model = SentenceTransformer(str(minilm_folder()), device="cpu")
  mark("load")
  return lambda texts: model.encode(texts, batch_size=batch_size, normalize_embeddings=True), dict


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


def worker_onnxruntime(mark, batch_size, onnx_path):
  import numpy as np
  import onnxruntime as ort
  import tokenizers

  mark("import")
  session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
  tok = tokenizers.Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
  tok.enable_truncation(256)
  tok.no_padding()
  mark("load")

  def encode(posts):
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

  return encode, dict


def export_pe_jax_onnx(folder: pathlib.Path) -> None:
  """What `python -m pe_jax.export --format onnx` writes, here for the pretrained alias the other rows run."""
  from pe_jax.export import ExportSource, export_source
  from pe_jax.models.loading import load_model

  encoder, tokenizer, prefix = load_model("minilm-l6")
  export_source(ExportSource(encoder=encoder, tokenizer=tokenizer.backend, prefix=prefix), "onnx", folder)


def worker_pe_jax_onnx(mark, batch_size, folder):
  import importlib.util

  import onnxruntime  # noqa: F401 - imported here so that "import" holds it, as for the other rows

  # The folder's own standalone loader, as a user without pe_jax would run it.
  spec = importlib.util.spec_from_file_location("load_embedder", pathlib.Path(folder) / "load_embedder.py")
  loader = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loader)
  mark("import")
  embed = loader.load(folder, batch_size=batch_size)
  mark("load")
  return embed, dict


def run_worker(args) -> None:
  posts = json.loads(pathlib.Path(args.posts).read_text())
  # From the parent's launch of this process: interpreter start-up and imports count, as for a user.
  marks = {}
  mark = lambda phase: marks.setdefault(phase, time.time())
  system, batch_size = args.worker, args.batch_size
  if system == "pe_jax":
    encode, extra = worker_pe_jax(mark, args.rows)
  elif system == "sentence_transformers":
    encode, extra = worker_sentence_transformers(mark, batch_size)
  elif system == "pe_jax_onnx":
    encode, extra = worker_pe_jax_onnx(mark, batch_size, args.pe_jax_onnx)
  else:
    encode, extra = worker_onnxruntime(mark, batch_size, args.onnx)
  encode(posts[:batch_size])
  mark("first_batch")
  first = encode(posts)
  whole = time.time() - args.launched_at
  cold = {"import_s": marks["import"] - args.launched_at, "load_s": marks["load"] - marks["import"],
          "first_batch_s": marks["first_batch"] - marks["load"]}
  cold.update(extra())
  runs = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    encode(posts)
    runs.append(time.perf_counter() - t)
  import numpy as np

  np.save(args.emb_out, np.asarray(first, np.float32))
  print(json.dumps({"whole_process_s": whole, "steady_s": min(runs), "peak_rss_mb": peak_rss_mb(), **cold}))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", type=int, default=4000)
  p.add_argument("--batch_size", type=int, default=32, help="posts per call of the peers (SYSTEM:B overrides)")
  p.add_argument("--rows", type=int, default=8, help="pe_jax: packed rows of 128 tokens per call")
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
  kinds = {name.split(":")[0] for name in systems}
  if "onnxruntime" in kinds:
    export_onnx(tmp / "minilm.onnx")
  if "pe_jax_onnx" in kinds:
    export_pe_jax_onnx(tmp / "pe_jax_onnx")

  results = {}
  for name in systems:
    kind, _, batch = name.partition(":")
    cmd = [sys.executable, __file__, "--worker", kind, "--posts", str(tmp / "posts.json"), "--onnx",
           str(tmp / "minilm.onnx"), "--pe_jax_onnx", str(tmp / "pe_jax_onnx"), "--emb_out", str(tmp / f"{name}.npy"),
           "--batch_size", batch or str(args.batch_size), "--rows", str(args.rows), "--repeats", str(args.repeats),
           "--launched_at", str(time.time())]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode:
      sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["whole_texts_per_s"] = len(posts) / r["whole_process_s"]
    r["steady_texts_per_s"] = len(posts) / r["steady_s"]
    results[name] = r
    print(f"{name:>22}: whole process {r['whole_process_s']:6.1f}s ({r['whole_texts_per_s']:5.0f} texts/s), "
          f"steady {r['steady_texts_per_s']:5.0f} texts/s, peak RSS {r['peak_rss_mb']:.0f} MB; cold start: "
          f"import {r['import_s']:.1f}s, load {r['load_s']:.1f}s, first batch {r['first_batch_s']:.1f}s"
          + (f" (compile {r['compile_s']:.1f}s over {r['shapes']} shapes)" if "compile_s" in r else ""), flush=True)

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
  print(f"{len(posts)} posts, peers' batch size {args.batch_size} unless named, pe_jax {args.rows} rows a call, "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
