"""Bad input to every command line, as a user meets it: one table, each case run as a real subprocess.

Every case asserts the exit status (2: the command line is wrong; 1: what it names is missing or broken;
0: repaired or skipped and said so), that the message names the wrong thing (and the nearest right one),
that no traceback is printed, and that nothing that was there before is lost or changed and nothing new
appears beyond what the case allows (no half workdir, no output of a refused run).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

import pytest

from pe_jax.data.manifest import Manifest
from pe_jax.models import pretrained, trained

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = f"{REPO}/configs/multitask.py:smoke"
MULTILINGUAL_SMOKE = f"{REPO}/configs/multilingual.py:smoke"


@dataclasses.dataclass(frozen=True)
class Case:
  id: str
  command: str  # the module: pe_jax.embed, ...
  args: tuple[str, ...]  # formatted with the paths of `ctx` (d: this case's folder)
  code: int
  says: tuple[str, ...]  # substrings of the error line (exit != 0) or of the output (exit 0)
  setup: Callable[[dict], None] = lambda ctx: None
  writes: tuple[str, ...] = ()  # glob patterns (relative to d) of what the command may create or change
  fresh_tfds: bool = False  # datasets are prepared (so the data folder is read) in a new tfds dir
  check: Callable[[dict, subprocess.CompletedProcess], None] | None = None
  run: Callable[..., subprocess.CompletedProcess] | None = None  # for a command that runs until stopped


def write(name: str, data: str | bytes) -> Callable[[dict], None]:
  def setup(ctx):
    path = ctx["d"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
  return setup


def steps(*setups: Callable[[dict], None]) -> Callable[[dict], None]:
  def setup(ctx):
    for s in setups:
      s(ctx)
  return setup


def copy(src_key: str, name: str) -> Callable[[dict], None]:
  return lambda ctx: shutil.copytree(ctx[src_key], ctx["d"] / name)


def corrupted_data(ctx):
  """A data folder whose tweeteval/emotion/train_text.txt has one byte changed (same size)."""
  data = ctx["d"] / "data"
  (data / "tweeteval").mkdir(parents=True)
  shutil.copy(ctx["data"] / "MANIFEST.md", data)
  shutil.copytree(ctx["data"] / "tweeteval" / "emotion", data / "tweeteval" / "emotion")
  text = data / "tweeteval" / "emotion" / "train_text.txt"
  raw = bytearray(text.read_bytes())
  raw[0] = ord("X") if raw[0] != ord("X") else ord("Y")
  text.write_bytes(bytes(raw))


def different_config(ctx):
  """A workdir whose config.json is the smoke recipe with batch_size 4 (the smoke run has 8)."""
  workdir = shutil.copytree(ctx["untrained"], ctx["d"] / "wd")
  config = json.loads((workdir / trained.CONFIG_FILE).read_text())
  config["batch_size"] = 4
  (workdir / trained.CONFIG_FILE).write_text(json.dumps(config))


def misaligned_translation(ctx):
  """A data folder of stsb_multi_mt whose German train file lost its last row, its manifest entry
  updated to match (so only the alignment with the English file is wrong)."""
  data = ctx["d"] / "data"
  shutil.copytree(ctx["data"] / "stsb_multi_mt", data / "stsb_multi_mt")
  rel = "stsb_multi_mt/stsb-de-train.csv"
  lines = (data / rel).read_bytes().splitlines(keepends=True)[:-1]
  (data / rel).write_bytes(b"".join(lines))
  raw = (data / rel).read_bytes()
  manifest = [f"| `{rel}` | {len(lines)} | {len(raw)} | {hashlib.sha256(raw).hexdigest()} |"
              if line.startswith(f"| `{rel}` |") else line
              for line in (ctx["data"] / "MANIFEST.md").read_text().splitlines()]
  (data / "MANIFEST.md").write_text("\n".join(manifest) + "\n")


def manifest_says(ctx, proc):
  manifest = Manifest(ctx["d"] / "data")
  rel = "tweeteval/emotion/train_text.txt"
  actual = hashlib.sha256((ctx["d"] / "data" / rel).read_bytes()).hexdigest()
  assert f"has sha256 {actual}, " in proc.stderr and manifest.entry(rel).sha256 in proc.stderr


def quiet_run_with_log(ctx, proc):
  """The terminal got the run's own lines; the library's went to the workdir's log.txt."""
  assert "step 1/3" in proc.stderr
  assert not [line for line in proc.stderr.splitlines() if line[:1] in "IWE" and line[1:5].isdigit()]
  assert "orbax" in (ctx["d"] / "run" / "log.txt").read_text()


def dead_letter_named(ctx, proc):
  from pe_jax.nearline import open_queue, open_store

  url = f"sqlite:///{ctx['d'] / 'nl.db'}"
  (dead,) = open_queue(url).dead_letters()
  assert dead.reason.startswith("not_json") and dead.body == b"{not json"
  assert open_store(url).count() == 1


def nearline_until_dead_letter(cmd, env, cwd) -> subprocess.CompletedProcess:
  """The worker runs until stopped: SIGTERM once the bad event is dead-lettered and the good one stored."""
  from pe_jax.nearline import open_queue, open_store

  url = f"sqlite:///{cwd / 'nl.db'}"
  proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  queue, store = open_queue(url), open_store(url)
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline and proc.poll() is None:
    if queue.dead_letters() and store.count():
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  queue.close()
  store.close()
  return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def publish_events(ctx):
  from pe_jax.nearline import encode_event, open_queue

  queue = open_queue(f"sqlite:///{ctx['d'] / 'nl.db'}")
  queue.publish([b"{not json", encode_event("42", "we are hiring")])
  queue.close()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


EMBED = ("--input={d}/posts.txt", "--output={d}/posts.npy")
POSTS = write("posts.txt", "hello world\nthe news today\n")

CASES = [
    # --- pe_jax.embed: the command line --------------------------------------------------------------
    Case("embed-unknown-flag", "pe_jax.embed", (*EMBED, "--modle=minilm-l6"), 2,
         ("unknown flag --modle", "did you mean 'model'?"), POSTS),
    Case("embed-required-flag", "pe_jax.embed", ("--input={d}/posts.txt",), 2, ("--output is required",), POSTS),
    Case("embed-bad-int", "pe_jax.embed", (*EMBED, "--batch_size=abc"), 2, ("--batch_size=abc: expected an int",),
         POSTS),
    Case("embed-bad-enum", "pe_jax.embed", (*EMBED, "--format=jsnl"), 2,
         ("--format=jsnl: not one of auto, text, jsonl", "did you mean 'jsonl'?"), POSTS),
    Case("embed-output-exists", "pe_jax.embed", (*EMBED, "--model={tiny}"), 2,
         ("posts.npy exists; pass --overwrite",), steps(POSTS, write("posts.npy", b"old vectors"))),
    # --- pe_jax.embed: the input ----------------------------------------------------------------------
    Case("embed-missing-input", "pe_jax.embed", ("--input={d}/nope.txt", "--output={d}/posts.npy"), 1,
         ("nope.txt: no such file",)),
    Case("embed-empty-input", "pe_jax.embed", EMBED, 1, ("posts.txt is empty",), write("posts.txt", "")),
    Case("embed-utf16-input", "pe_jax.embed", EMBED, 1, ("posts.txt: line 1, byte 0: a UTF-16 byte-order mark",),
         write("posts.txt", "hello\nworld\n".encode("utf-16"))),
    Case("embed-binary-input", "pe_jax.embed", EMBED, 1, ("posts.txt: line 2, byte 3: a NUL byte",),
         write("posts.txt", b"ok\nbad\x00bytes\n")),
    Case("embed-jsonl-invalid-json", "pe_jax.embed", ("--input={d}/p.jsonl", "--output={d}/p.npy"), 1,
         ("p.jsonl:3: not valid JSON",), write("p.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": "c\n')),
    Case("embed-jsonl-no-text", "pe_jax.embed", ("--input={d}/p.jsonl", "--output={d}/p.npy"), 1,
         ("p.jsonl:2: no 'text' field",), write("p.jsonl", '{"text": "a"}\n{"body": "b"}\n')),
    Case("embed-jsonl-only-blank", "pe_jax.embed", ("--input={d}/p.jsonl", "--output={d}/p.npy"), 1,
         ("p.jsonl: no posts, only 3 blank lines",), write("p.jsonl", "\n  \n\n")),
    Case("embed-latin1-and-blank-lines", "pe_jax.embed",
         ("--input={d}/p.jsonl", "--output={d}/p.npy", "--model={tiny}"), 0,
         ("embedded 2 posts", "invalid unicode replaced 1", "first invalid UTF-8 at line 3, byte 13",
          "blank lines skipped 2"),
         write("p.jsonl", b'{"text": "hello"}\n\n{"text": "caf\xe9 news"}\n\n'), writes=("p.npy", "p.ids.json")),
    # --- pe_jax.embed: the model ----------------------------------------------------------------------
    Case("embed-unknown-alias", "pe_jax.embed", (*EMBED, "--model=minilm-l7"), 1,
         ("unknown model 'minilm-l7' (did you mean 'minilm-l6'?)",), POSTS),
    Case("embed-missing-relative-model", "pe_jax.embed", (*EMBED, "--model=./workdirs/dmeo"), 1,
         ("model ./workdirs/dmeo: no such folder (did you mean 'workdirs/demo'?)",),
         steps(POSTS, lambda ctx: (ctx["d"] / "workdirs" / "demo").mkdir(parents=True))),
    Case("embed-missing-absolute-model", "pe_jax.embed", (*EMBED, "--model={d}/x"), 1, ("/x: no such folder",), POSTS),
    Case("embed-folder-not-a-model", "pe_jax.embed", (*EMBED, "--model={d}/empty"), 1,
         ("empty is not a model folder",), steps(POSTS, lambda ctx: (ctx["d"] / "empty").mkdir())),
    Case("embed-workdir-without-checkpoint", "pe_jax.embed", (*EMBED, "--model={d}/wd"), 1,
         ("wd/checkpoints: no checkpoint found",), steps(POSTS, copy("untrained", "wd"))),
    # --- pe_jax.train: the config -------------------------------------------------------------------
    Case("train-unknown-config-file", "pe_jax.train", ("--config={repo}/configs/multitsk.py", "--workdir={d}/run"), 2,
         ("multitsk.py: no such config file", "configs/multitask.py'?)")),
    Case("train-unknown-config-variant", "pe_jax.train", (f"--config={REPO}/configs/multitask.py:dmeo",
                                                          "--workdir={d}/run"), 2,
         ("unknown config switch 'dmeo'", "(did you mean 'demo'?)")),
    Case("train-config-flag-with-a-value", "pe_jax.train", (f"--config={REPO}/configs/multitask.py:demo,tasks_first=2",
                                                            "--workdir={d}/run"), 2,
         ("config switch 'tasks_first' is on or off, not '2': write tasks_first or tasks_first=false",)),
    Case("train-unknown-key", "pe_jax.train", (f"--config={SMOKE}", "--workdir={d}/run", "--config.batch_sise=8"), 2,
         ("--config.batch_sise:", "no key 'batch_sise' (did you mean 'batch_size'?)")),
    Case("train-unknown-nested-key", "pe_jax.train", (f"--config={REPO}/configs/multitask.py", "--workdir={d}/run",
                                                      "--config.tasks.hat.weight=0"), 2,
         ("no key 'tasks.hat' (did you mean 'tasks.hate'?)",)),
    Case("train-wrongly-typed-value", "pe_jax.train", (f"--config={SMOKE}", "--workdir={d}/run",
                                                       "--config.total_steps=abc"), 2,
         ("--config.total_steps=abc: expected an int, like 30",)),
    Case("train-stray-argument", "pe_jax.train", (f"--config={SMOKE}", "--workdir={d}/run", "smoke"), 2,
         ("unexpected arguments 'smoke'",)),
    # --- pe_jax.train: data and workdir ---------------------------------------------------------------
    Case("train-missing-data-folder", "pe_jax.train",
         (f"--config={SMOKE}", "--workdir={d}/run", "--data_dir={d}/nodata"), 1, ("nodata does not exist",),
         fresh_tfds=True),
    Case("train-empty-data-folder", "pe_jax.train", (f"--config={SMOKE}", "--workdir={d}/run", "--data_dir={d}/data"),
         1, ("data has no MANIFEST.md (it is empty)",), lambda ctx: (ctx["d"] / "data").mkdir(), fresh_tfds=True),
    Case("train-manifest-mismatch", "pe_jax.train", (f"--config={SMOKE}", "--workdir={d}/run", "--data_dir={d}/data"),
         1, ("task 'emotion'", "train_text.txt has sha256"), corrupted_data, fresh_tfds=True, check=manifest_says),
    # --- pe_jax.train: the translation task of configs/multilingual.py -------------------------------
    Case("train-translation-language-without-file", "pe_jax.train",
         (f"--config={MULTILINGUAL_SMOKE}", "--workdir={d}/run", "--config.tasks.translation.languages=('de', 'xx')"), 1,
         ("config.tasks.translation.languages: stsb_multi_mt has no file in language 'xx'", "its languages: de, en")),
    Case("train-translation-rows-misaligned", "pe_jax.train",
         (f"--config={MULTILINGUAL_SMOKE}", "--workdir={d}/run", "--data_dir={d}/data",
          "--config.tasks.sentiment_french.weight=0", "--config.tasks.sentiment_german.weight=0"), 1,
         ("stsb_multi_mt/stsb-de-train.csv (raw data folder) holds 5748 rows, but the en file "
          "stsb_multi_mt/stsb-en-train.csv holds 5749",), misaligned_translation, fresh_tfds=True),
    Case("train-self-distillation-teacher-width", "pe_jax.train",
         (f"--config={MULTILINGUAL_SMOKE}", "--workdir={d}/run", "--config.tasks.translation.self_distill.teacher=base"),
         1, ("config.tasks.translation.self_distill.teacher='base' embeds at 32-d", "the student embeds at 16-d")),
    Case("train-frozen-layers-beyond-the-encoder", "pe_jax.train",
         (f"--config={SMOKE}", "--workdir={d}/run", "--config.model.frozen_layers=7"), 1,
         ("config.model.frozen_layers=7 must be an integer from 0", "to 2 (the encoder's layers")),
    Case("train-workdir-with-another-config", "pe_jax.train", (f"--config={SMOKE}", "--workdir={d}/wd"), 1,
         ("holds a run with a different config", "batch_size: workdir has 4, this run has 8"), different_config,
         writes=("wd/log.txt",)),
    Case("train-nan-loss", "pe_jax.train", (f"--config={SMOKE}", "--workdir={d}/run", "--config.total_steps=3",
                                            "--config.optimizer.learning_rate=1e30", "--config.checkpoint_every=1",
                                            "--config.eval_every=0", "--config.model.encoder.max_seq_length=16"), 1,
         ("loss nan", "Stopped without saving; the latest checkpoint is step"), writes=("run", "run/*"),
         check=quiet_run_with_log),
    # --- pe_jax.evaluate and pe_jax.ablate ------------------------------------------------------------
    Case("evaluate-required-flag", "pe_jax.evaluate", (f"--config={SMOKE}", "--model=minilm-l6"), 2,
         ("--out is required",)),
    Case("evaluate-unknown-set", "pe_jax.evaluate",
         (f"--config={SMOKE}", "--model=minilm-l6", "--out={d}/o.json", "--sets=emotion,ironny"), 2,
         ("--sets: 'ironny' is neither a task nor a zero-shot set", "(did you mean 'irony'?)")),
    Case("evaluate-unknown-dtype", "pe_jax.evaluate",
         (f"--config={SMOKE}", "--model=minilm-l6", "--out={d}/o.json", "--dtype=float16"), 2,
         ("--dtype", "float32, bfloat16")),
    Case("ablate-unknown-config-file", "pe_jax.ablate",
         ("--config={repo}/configs/ablation/smok.py", "--workdir={d}/a"), 2,
         ("smok.py: no such config file", "configs/ablation/smoke.py'?)")),
    Case("ablate-empty-seed-list", "pe_jax.ablate",
         ("--config={repo}/configs/ablation/smoke.py", "--workdir={d}/a", "--config.ablation.seeds=()"), 1,
         ("ablation.seeds is empty",)),
    Case("ablate-too-few-anchors", "pe_jax.ablate",
         ("--config={repo}/configs/ablation/smoke.py", "--workdir={d}/a", "--config.ablation.min_anchors=1000"), 1,
         ("ablation.min_anchors=1000: task 'emotion' gets 96 anchors in run only_emotion", "raise total_steps to >= 125")),
    Case("ablate-workdir-of-another-results-format", "pe_jax.ablate",
         ("--config={repo}/configs/ablation/smoke.py", "--workdir={d}/a"), 1,
         ("a holds an ablation of results format 1", "use a new --workdir"), write("a/ablation.json", "{}"),
         writes=("a/log.txt",)),  # the command line's log goes to an existing workdir
    # --- pe_jax.export --------------------------------------------------------------------------------
    Case("export-unknown-format", "pe_jax.export", ("--workdir={d}/wd", "--format=onx", "--out={d}/out"), 2,
         ("unknown export format 'onx'", "(did you mean 'onnx'?)"), copy("untrained", "wd")),
    Case("export-out-exists", "pe_jax.export", ("--workdir={d}/wd", "--format=onnx", "--out={d}/out"), 2,
         ("out exists and is not empty; pass --overwrite",),
         steps(copy("untrained", "wd"), write("out/model.onnx", "old"))),
    Case("export-workdir-without-checkpoint", "pe_jax.export",
         ("--workdir={d}/wd", "--format=onnx", "--out={d}/out"), 1,
         ("wd/checkpoints: no checkpoints directory",), copy("untrained", "wd")),
    Case("export-missing-workdir", "pe_jax.export", ("--workdir={d}/nowd", "--format=hf", "--out={d}/out"), 1,
         ("nowd: no such directory",)),
    # --- pe_jax.nearline ------------------------------------------------------------------------------
    Case("nearline-redis-unreachable", "pe_jax.nearline",
         ("--model={tiny}", "--source=redis://127.0.0.1:{port}/0?connect_attempts=2", "--store=sqlite:///{d}/s.db"), 1,
         ("no Redis server answered (2 attempts", "apt-get install redis-server")),
    Case("nearline-sqlite-folder-missing", "pe_jax.nearline",
         ("--model={tiny}", "--source=sqlite:///{d}/no/q.db", "--store=sqlite:///{d}/s.db"), 1, ("no such folder",)),
    Case("nearline-malformed-event-dead-lettered", "pe_jax.nearline",
         ("--model={tiny}", "--source=sqlite:///{d}/nl.db", "--store=sqlite:///{d}/nl.db", "--embed_batch=4",
          "--report_every_s=0.5"), 0,
         ("dead-lettered message", "not_json"), publish_events, writes=("nl.db*",), check=dead_letter_named,
         run=nearline_until_dead_letter),
]


@pytest.fixture(scope="module")
def untrained_workdir(tiny_bert_dir, tmp_path_factory) -> pathlib.Path:
  """What a training workdir holds before its first checkpoint: config, model description, tokenizer."""
  import importlib.util

  workdir = tmp_path_factory.mktemp("untrained") / "wd"
  workdir.mkdir()
  source = pretrained.from_hf_folder(tiny_bert_dir)
  (workdir / trained.MODEL_FILE).write_text(json.dumps({"encoder": source.config.to_dict(), "heads": [], "prefix": ""}))
  shutil.copy(tiny_bert_dir / "tokenizer.json", workdir / trained.TOKENIZER_FILE)
  spec = importlib.util.spec_from_file_location("multitask_config", REPO / "configs" / "multitask.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  (workdir / trained.CONFIG_FILE).write_text(module.get_config("smoke").to_json_best_effort())
  return workdir


def snapshot(folder: pathlib.Path) -> dict[str, str | None]:
  """relative path -> sha256 (None for a folder) of everything under `folder`."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
          for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path, tiny_bert_dir, untrained_workdir, shared_data_dir, tfds_dir):
  d = tmp_path / "case"
  d.mkdir()
  ctx = {"d": d, "tiny": tiny_bert_dir, "untrained": untrained_workdir, "data": shared_data_dir, "repo": REPO,
         "port": free_port()}
  case.setup(ctx)
  before = snapshot(d)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
         "PE_JAX_LOG_DIR": str(tmp_path / "logs"), "PE_JAX_DATA_DIR": str(shared_data_dir),
         "PE_JAX_TFDS_DIR": str(tmp_path / "tfds" if case.fresh_tfds else tfds_dir)}
  cmd = [sys.executable, "-m", case.command, *(a.format(**ctx) for a in case.args)]
  if case.run is not None:
    proc = case.run(cmd, env, d)
  else:
    proc = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=600)
  shown = (f"$ {' '.join(cmd)}\nexit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
           f"--- stderr\n{proc.stderr[-3000:]}")

  assert proc.returncode == case.code, shown
  assert "Traceback" not in proc.stdout + proc.stderr, shown
  if case.code:
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{case.command}: ")]
    assert len(errors) == 1, shown  # one line
    said = errors[0]
  else:
    said = proc.stdout + proc.stderr
  for words in case.says:
    assert words in said, f"expected {words!r} in {said!r}\n{shown}"
  after = snapshot(d)
  allowed = lambda path: any(fnmatch.fnmatch(path, g) for g in case.writes)  # noqa: E731
  changed = [p for p, digest in before.items() if after.get(p, "<gone>") != digest and not allowed(p)]
  assert not changed, f"changed or lost: {changed}\n{shown}"
  unexpected = [p for p in after if p not in before and not allowed(p)]
  assert not unexpected, f"written by a refused run: {unexpected}\n{shown}"
  if case.check is not None:
    case.check(ctx, proc)
