"""Sharded, resumable embedding output: parts by line, a manifest, workers, and the CLI across processes."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pe_jax.embed import embed_parts
from pe_jax.serving import sharded_output
from pe_jax.serving.embedder import Embedder

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedder(tiny_bert_dir) -> Embedder:
  return Embedder.from_pretrained(str(tiny_bert_dir), batch_size=8)


def write_posts(path: pathlib.Path, n: int) -> list[dict]:
  """JSONL posts, every 7th without an id (its line number stands in) and a blank line after the 5th."""
  records = [{"text": f"post {i} " + "about hiring " * (i % 5)} | ({} if i % 7 == 3 else {"id": f"p{i}"})
             for i in range(n)]
  lines = [json.dumps(r) for r in records]
  path.write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n")
  return records


def expected_ids(records) -> list:
  return [r.get("id", i + 1 + (i >= 5)) for i, r in enumerate(records)]


@pytest.mark.parametrize("content", [b"a\nbb\n\nccc\nd\n", b"a\nbb\n\nccc\nd", b"", b"\n\n\n"])
@pytest.mark.parametrize("lines_per_part", [1, 2, 3, 10])
def test_parts_cover_every_line_once(tmp_path, content, lines_per_part):
  path = tmp_path / "posts.txt"
  path.write_bytes(content)
  parts = sharded_output.plan_parts(path, lines_per_part)
  got = [line for part in parts for line in sharded_output.read_part_lines(path, part)]
  assert got == content.decode().splitlines()
  assert [p.first_line for p in parts] == list(range(0, len(got), lines_per_part))


def test_workers_together_write_what_one_embedder_computes(embedder, tmp_path):
  src = tmp_path / "posts.jsonl"
  records = write_posts(src, 23)
  out = tmp_path / "out"
  kwargs = dict(jsonl=True, model="tiny", lines_per_part=4)
  assert embed_parts(embedder, src, out, num_workers=2, worker=1, **kwargs) == ([1, 3, 5], [])
  assert sharded_output.missing_parts(out) == [0, 2, 4]
  with pytest.raises(FileNotFoundError, match=r"parts \[0, 2, 4\] of 6 are not finished"):
    sharded_output.load(out)
  assert embed_parts(embedder, src, out, num_workers=2, worker=0, **kwargs) == ([0, 2, 4], [])
  ids, vectors = sharded_output.load(out)
  assert ids == expected_ids(records)
  np.testing.assert_allclose(vectors, embedder([r["text"] for r in records]), rtol=1e-5, atol=1e-6)
  # Finished parts are skipped; the same folder refuses a job with other settings.
  assert embed_parts(embedder, src, out, num_workers=1, worker=0, **kwargs) == ([], [0, 1, 2, 3, 4, 5])
  with pytest.raises(ValueError, match=r"lines_per_part: .*manifest.json has 4, this job has 5"):
    embed_parts(embedder, src, out, num_workers=1, worker=0, **{**kwargs, "lines_per_part": 5})


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def embed_job(model_dir, src, out, *, num_processes: int = 1, port: int = 0, lines_per_part: int = 100,
              devices: int = 1):
  """`python -m pe_jax.embed` as the processes of one JAX job, each with `devices` CPU devices."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  args = [sys.executable, "-m", "pe_jax.embed", f"--model={model_dir}", f"--input={src}", f"--output={out}",
          "--batch_size=8", f"--lines_per_part={lines_per_part}"]
  if num_processes == 1:
    return [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
  return [subprocess.Popen(args + [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                                   f"--process_id={i}"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True) for i in range(num_processes)]


def finish(procs) -> list[str]:
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=300)[0])
      assert p.returncode == 0, outputs[-1][-4000:]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail("a process hung; each one's last lines:\n" + "\n---\n".join(
        p.communicate()[0][-2000:] for p in procs))
  finally:
    for p in procs:
      p.kill()
  return outputs


@pytest.mark.slow
def test_two_process_job_equals_one_process_by_id(tiny_bert_dir, tmp_path):
  src = tmp_path / "posts.jsonl"
  records = write_posts(src, 2000)
  finish(embed_job(tiny_bert_dir, src, tmp_path / "one.npy"))
  one_ids = json.loads((tmp_path / "one.ids.json").read_text())
  one = dict(zip(map(str, one_ids), np.load(tmp_path / "one.npy")))
  # Two devices each and parts of 1,000 posts, so each process has a dozen calls in flight on both of
  # its devices at once; none may wait on the other process (calls holding a cross-device sum deadlocked
  # over gloo here, every time).
  outputs = finish(embed_job(tiny_bert_dir, src, tmp_path / "two", num_processes=2, port=free_port(), devices=2,
                             lines_per_part=1000))
  assert "worker 0/2: part 0 " in outputs[0] and "worker 1/2: part 1 " in outputs[1]
  ids, vectors = sharded_output.load(tmp_path / "two")
  assert ids == one_ids == expected_ids(records)
  for i, v in zip(ids, vectors):
    np.testing.assert_allclose(v, one[str(i)], rtol=1e-5, atol=1e-6, err_msg=f"id {i}")


@pytest.mark.slow
def test_a_killed_job_reruns_only_its_missing_parts(tiny_bert_dir, tmp_path):
  """Process 1 is killed (SIGKILL) once it finished its first part; the scheduler then takes the
  job down (process 0 too, as it would otherwise wait for the dead one). The rerun embeds exactly
  the parts that are missing and leaves the finished ones as they were."""
  src = tmp_path / "posts.jsonl"
  records = write_posts(src, 3000)
  out = tmp_path / "out"
  procs = embed_job(tiny_bert_dir, src, out, num_processes=2, port=free_port(), lines_per_part=50)
  try:
    deadline = time.monotonic() + 120
    while not sharded_output.is_finished(out, 1):
      assert all(p.poll() is None for p in procs), "a process ended before it was killed"
      assert time.monotonic() < deadline, "process 1 finished no part within 120 s"
      time.sleep(0.005)
    procs[1].send_signal(signal.SIGKILL)
    procs[0].send_signal(signal.SIGKILL)
  finally:
    for p in procs:
      p.kill()
      p.communicate()
  missing = sharded_output.missing_parts(out)
  assert missing and 1 not in missing, missing
  finished = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.npy")}

  outputs = finish(embed_job(tiny_bert_dir, src, out, num_processes=2, port=free_port(), lines_per_part=50))
  rerun = sorted(int(line.split(" part ")[1].split()[0]) for o in outputs for line in o.splitlines()
                 if line.startswith("worker "))
  assert rerun == missing
  assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.npy") if p.name in finished} == finished
  assert not list(out.glob(".*.partial"))
  ids, vectors = sharded_output.load(out)
  assert ids == expected_ids(records) and len(vectors) == len(records)
