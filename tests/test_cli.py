"""What every command line shares (pe_jax/cli.py): help that exits 0, -v, the log file. Bad input is
tests/test_bad_input.py."""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys

import pytest

from pe_jax import cli
from pe_jax.training import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
# Each command and the flag its help must list first: the one a user has to think about.
COMMANDS = {"pe_jax.train": "config", "pe_jax.embed": "model", "pe_jax.evaluate": "config",
            "pe_jax.ablate": "config", "pe_jax.export": "workdir", "pe_jax.nearline": "model"}


def run(*args: str, cwd=None, **env) -> subprocess.CompletedProcess:
  environ = {**os.environ, **env,
             "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, env=environ,
                        cwd=cwd)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_with_the_important_flags_first(command, tmp_path):
  for flag in ("--help", "-h"):
    proc = run(command, flag, PE_JAX_LOG_DIR=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.split("flags:\n", 1)[1].startswith(f"  --{COMMANDS[command]} "), out
    assert "Library logs go to" in out and "--helpfull" in out
    assert proc.stderr == ""


def test_verbose_shows_logs_and_the_traceback(tmp_path, tiny_bert_dir):
  (tmp_path / "posts.txt").write_text("hello\n")
  args = ("pe_jax.embed", "--input=posts.txt", "--output=posts.npy", "--model=./missing")
  quiet, verbose = (run(*args, *extra, cwd=tmp_path, PE_JAX_LOG_DIR=str(tmp_path / "logs")) for extra in ((), ("-v",)))
  line = "pe_jax.embed: model ./missing: no such folder"
  for proc in (quiet, verbose):
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1] == line, proc.stderr
  assert quiet.stderr == line + "\n"
  assert "Traceback" in verbose.stderr
  assert "FileNotFoundError" in (tmp_path / "logs" / "pe_jax.embed.log").read_text()  # the quiet run's traceback


def record(message: str) -> logging.LogRecord:
  return logging.LogRecord("absl", logging.WARNING, __file__, 1, message, None, None)


def test_the_log_waits_for_its_folder(tmp_path):
  workdir, fallback = tmp_path / "run", tmp_path / "logs" / "cmd.log"
  log = cli._LogFile(workdir / cli.LOG_FILE, fallback)
  log.emit(record("before the run started"))
  assert not workdir.exists() and log.destination == fallback
  workdir.mkdir()  # the run starts
  log.emit(record("after"))
  log.close()
  text = (workdir / cli.LOG_FILE).read_text()
  assert text.index("before the run started") < text.index("after") and not fallback.exists()


def test_a_run_that_never_started_logs_to_the_fallback(tmp_path):
  fallback = tmp_path / "logs" / "cmd.log"
  log = cli._LogFile(tmp_path / "never" / cli.LOG_FILE, fallback)
  log.emit(record("refused"))
  log.close()
  assert "refused" in fallback.read_text() and not (tmp_path / "never").exists()


def test_warnings_nobody_can_act_on_are_dropped():
  assert not cli._actionable(record("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so: x"))
  assert cli._actionable(record("Unable to initialize backend 'cuda': no GPU"))
  assert not workdir_lib._not_untracked_save(record("Requested `tracked_metric`; did not provide metrics."))
