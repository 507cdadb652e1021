r"""What every command line shares: a quiet terminal, help that exits 0, and one-line errors.

  if __name__ == "__main__":
    cli.run(main, log_in=_WORKDIR, console=("pe_jax.data",))

Logs. Library logging (absl, JAX, Orbax, TFDS, Python warnings) goes to a file, not the terminal:
WORKDIR/log.txt for a command given `log_in` (held back until the run creates that folder, so a run
refused before it starts leaves no folder), else ~/.cache/pe_jax/logs/COMMAND.log ($PE_JAX_LOG_DIR).
The terminal keeps what the command says itself: its prints and progress lines, and the pe_jax loggers
it names in `console`. `--verbosity=N` (absl's flag: 0 info, 1 debug) puts every log on the terminal
instead, at that level, and shows the traceback of an error; a bare `-v` is --verbosity=0.

Exit status. 2: the command line is wrong: a flag, the config file, a config key or value, an output
that needs --overwrite (`UsageError`, FileExistsError). 1: the command line is fine but what it names is
missing or wrong (a file, folder, model, dataset, checkpoint), or the run failed (OSError, ValueError,
FloatingPointError). Either way one line on stderr, `pe_jax.train: ...`; the traceback is in the log.
Anything else is a bug in pe_jax: the same one line, naming the exception and the log.
"""

from __future__ import annotations

import datetime
import logging
import os
import pathlib
import re
import sys
import traceback
from typing import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from pe_jax.suggest import closest, did_you_mean

FLAGS = flags.FLAGS
LOG_DIR_ENV = "PE_JAX_LOG_DIR"
DEFAULT_LOG_DIR = pathlib.Path("~/.cache/pe_jax/logs")
LOG_FILE = "log.txt"
_HELP = ("--help", "-h", "-?", "--helpshort")
# Bad input, as the library reports it: a message, no traceback. ModuleNotFoundError: an optional package
# is missing, and the message says which.
_INPUT_ERRORS = (OSError, ValueError, FloatingPointError, ModuleNotFoundError)
_USAGE_ERRORS = (app.UsageError, FileExistsError)  # FileExistsError: an output that needs --overwrite
_CONSOLE_FORMAT = "%(asctime)s %(message)s"


class UsageError(Exception):
  """A command line that contradicts itself: exit status 2."""


def program() -> str:
  """`pe_jax.embed`, `pe_jax.export`: the name a user ran, for messages and the log file."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  name = spec.name if spec is not None else pathlib.Path(sys.argv[0]).stem
  return name.removesuffix(".__main__")


def run(main: Callable[[list[str]], object], *, log_in: flags.FlagHolder | None = None,
        console: Sequence[str] = ()) -> None:
  """`app.run(main)` with this module's help, errors and logs. `log_in`: the flag naming the folder
  whose log.txt gets the log; `console`: pe_jax loggers whose INFO records also go to the terminal."""
  argv = ["--verbosity=0" if arg == "-v" else arg for arg in sys.argv]  # absl's -v wants a value
  if any(arg in _HELP for arg in argv[1:]):
    print(help_text(log_in))
    sys.exit(0)
  if "--helpfull" in argv[1:]:
    app.usage(writeto_stdout=True)  # absl's own, every flag of every module
    sys.exit(0)
  app.run(lambda args: _run_main(main, args, log_in, console), argv=argv, flags_parser=_parse_flags)


# --- Help --------------------------------------------------------------------------------------------

def help_text(log_in: flags.FlagHolder | None = None) -> str:
  """The command's docstring, its own flags in the order it defines them (the ones that matter first),
  the pe_jax flags it borrows, then where the logs go."""
  doc = (sys.modules["__main__"].__doc__ or "").strip()
  own = FLAGS.get_flags_for_module("__main__")
  borrowed = [f for module, fs in FLAGS.flags_by_module_dict().items() if module.startswith("pe_jax.")
              for f in fs if f not in own]
  lines = [doc, "", "flags:"] + [line for f in own for line in _describe(f)]
  if any(f.flag_type() == "config object" for f in own):
    lines += ["  --config.KEY=VALUE", "      Overrides one key of the config, e.g. --config.total_steps=300."]
  if borrowed:
    lines += ["", "multi-process flags:"] + [line for f in borrowed for line in _describe(f)]
  where = f"--{log_in.name}/{LOG_FILE}" if log_in is not None else str(log_dir() / f"{program()}.log")
  lines += ["", f"Library logs go to {where}; -v shows them here, with tracebacks (--verbosity=1: debug too).",
            "--helpfull lists every flag, absl's included."]
  return "\n".join(lines)


def _describe(flag: flags.Flag) -> list[str]:
  # absl keeps a required flag as a validator with this fixed message.
  if any("must have a value other than None" in v.message for v in flag.validators):
    default = "required"
  else:
    default = "default: " + (repr(flag.default) if flag.default is not None else "none")
  return [f"  --{flag.name} ({default})", f"      {flag.help}"]


# --- Flags --------------------------------------------------------------------------------------------

def _parse_flags(argv: list[str]) -> list[str]:
  try:
    rest = FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - flags.Error, or whatever a config file raises while it loads
    problem = next(filter(None, (_config_problem(name, argv) for name in _config_flags())), None)
    _exit(problem or _flag_error(e), 2, e, verbose=any(a.startswith(("--verbosity", "-v")) for a in argv))
  from ml_collections import ConfigDict

  for name in _config_flags():
    if FLAGS[name].value is not None and not isinstance(FLAGS[name].value, ConfigDict):
      # config_flags defers a file that failed to load until its first use; fail now instead.
      _exit(_config_problem(name, argv) or f"--{name}: the config did not load", 2)
  if len(rest) > 1:
    _exit(f"unexpected arguments {' '.join(rest[1:])!r}: flags are written --name=value", 2)
  return rest


def _config_flags() -> list[str]:
  return [name for name in FLAGS if FLAGS[name].flag_type() == "config object"]


def _config_args(argv: list[str], name: str) -> tuple[str | None, list[str]]:
  """(the --NAME value, the keys of the --NAME.KEY overrides) as typed."""
  path, keys = None, []
  for i, arg in enumerate(argv[1:], 1):
    if arg == f"--{name}" and i + 1 < len(argv):
      path = argv[i + 1]
    elif arg.startswith(f"--{name}="):
      path = arg.split("=", 1)[1]
    elif arg.startswith(f"--{name}."):
      keys.append(arg[len(name) + 3:].split("=", 1)[0])
  return path, keys


def _config_problem(name: str, argv: list[str]) -> str | None:
  """What is wrong with the config flag `name` as typed (its file, the file's argument, an override key),
  with the nearest existing name; None when it loads."""
  path, keys = _config_args(argv, name)
  if path is None:
    return None
  file = pathlib.Path(path.split(":", 1)[0])
  if not file.is_file():
    match = closest(file.name, [p.name for p in file.parent.glob("*.py")] if file.parent.is_dir() else [])
    hint = f" (did you mean {str(file.parent / match)!r}?)" if match else ""
    return f"--{name} {path}: no such config file{hint}"
  try:
    config = FLAGS[name].parser.parse(path)
  except Exception as e:  # noqa: BLE001 - a config file may raise anything; its message says what
    message = _last_line(e)
    return f"--{name} {path}: {message}{_suggestion_in(message)}"
  for key in keys:
    node, parts = config, key.split(".")
    for depth, part in enumerate(parts):
      known = list(node.keys()) if hasattr(node, "keys") else []
      if part not in known:
        prefix = ".".join(parts[:depth] + [""])
        match = closest(part, known)
        hint = f" (did you mean {prefix + match!r}?)" if match else ""
        return f"--{name}.{key}: {path} has no key {prefix + part!r}{hint}"
      node = node[part]
  return None


def _flag_error(error: Exception) -> str:
  message = _last_line(error)
  if isinstance(error, flags.UnrecognizedFlagError):
    return f"unknown flag --{error.flagname}{did_you_mean(error.flagname, list(FLAGS))}; --help lists the flags"
  typed = re.match(r"flag --([^=]+)=(.*?): (.*)", message)
  if not typed:
    return message
  name, value, reason = typed.groups()
  if "must have a value other than None" in reason:
    return f"--{name} is required: {FLAGS[name].help}"
  flag = FLAGS[name] if name in FLAGS else None
  choices = getattr(getattr(flag, "parser", None), "enum_values", None)
  if choices:
    return f"--{name}={value}: not one of {', '.join(choices)}{did_you_mean(value, choices)}"
  if flag is not None and flag.default is not None:  # a config override's default is the config's value
    kind = type(flag.default).__name__
    return f"--{name}={value}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind}, like {flag.default!r}"
  return f"--{name}={value}: {reason}"


def _last_line(error: BaseException) -> str:
  """The message an error ends with: config_flags wraps a config file's error in its whole traceback."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
  last = re.sub(r"^\w+(Error|Exception): ", "", lines[-1])
  return last.strip("'\"") if isinstance(error, KeyError) else last


def _suggestion_in(message: str) -> str:
  """For messages of the form "... 'dmeo' ...; known: smoke, demo": the closest known name."""
  found = re.search(r"'([^']+)'.*known: ([^;()]+)", message)
  return did_you_mean(found[1], [k.strip() for k in found[2].split(",")]) if found else ""


# --- Running main: logs and errors --------------------------------------------------------------------

def _run_main(main, argv: list[str], log_in: flags.FlagHolder | None, console: Sequence[str]) -> None:
  verbose = FLAGS["verbosity"].present > 0
  log = _route_logs(log_in, console, verbose)
  try:
    main(argv)
  except KeyboardInterrupt:
    _exit("interrupted", 130)
  except Exception as e:  # noqa: BLE001 - every error ends as one line and an exit status
    logging.getLogger("pe_jax").error("%s failed", program(), exc_info=True)
    if isinstance(e, (UsageError, *_USAGE_ERRORS)):
      _exit(_one_line(e), 2, e, verbose)
    if isinstance(e, _INPUT_ERRORS):
      _exit(_one_line(e), 1, e, verbose)
    where = f"; traceback in {log.destination}" if log is not None else ""
    _exit(f"{type(e).__name__}: {_one_line(e)} (an error in pe_jax{where})", 1, e, verbose)


def _one_line(error: BaseException) -> str:
  message = " ".join(str(error).split()) or type(error).__name__
  # str(KeyError('x')) is "'x'" and an OSError from the OS names no file without its filename.
  return message.strip("'\"") if isinstance(error, KeyError) else message


def _exit(message: str, code: int, error: BaseException | None = None, verbose: bool = False):
  if verbose and error is not None:
    traceback.print_exception(error)
  print(f"{program()}: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def log_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR).expanduser()


def _route_logs(log_in: flags.FlagHolder | None, console: Sequence[str], verbose: bool) -> "_LogFile | None":
  """Every log to a file (or, verbose, to the terminal as absl has it); `console` loggers to the terminal."""
  logging.captureWarnings(True)  # warnings become records of the "py.warnings" logger, so they follow the logs
  root = logging.getLogger()
  absl_handler = absl_logging.get_absl_handler()
  if verbose:
    absl_handler.addFilter(_actionable)
    return None
  fallback = log_dir() / f"{program()}.log"
  target = pathlib.Path(log_in.value) / LOG_FILE if log_in is not None and log_in.value else fallback
  log = _LogFile(target, fallback)
  log.setFormatter(absl_logging.PythonFormatter())
  log.addFilter(_actionable)
  root.removeHandler(absl_handler)
  root.addHandler(log)
  root.setLevel(logging.INFO)
  for name in console:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_CONSOLE_FORMAT))
    logging.getLogger(name).addHandler(handler)
  return log


def _actionable(record: logging.LogRecord) -> bool:
  # jax looks for a TPU on every machine; a machine without libtpu is not news.
  message = record.getMessage()
  return not (message.startswith("Unable to initialize backend 'tpu'") and "libtpu.so" in message)


class _LogFile(logging.Handler):
  """Appends records to `path` once its folder exists, holding them until then (a workdir appears only
  when its run starts); records still held at exit go to `fallback`."""

  def __init__(self, path: pathlib.Path, fallback: pathlib.Path):
    super().__init__(logging.INFO)
    self.path, self.fallback = path, fallback
    self._held: list[str] = [f"=== {datetime.datetime.now():%Y-%m-%d %H:%M:%S} {program()} "
                             f"{' '.join(sys.argv[1:])} (pid {os.getpid()})"]
    self._file = None
    if path == fallback:
      path.parent.mkdir(parents=True, exist_ok=True)

  @property
  def destination(self) -> pathlib.Path:
    return self.path if self._file is not None or self.path.parent.is_dir() else self.fallback

  def _open(self, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")
    self._file.write("".join(line + "\n" for line in self._held))
    self._held = []

  def emit(self, record: logging.LogRecord) -> None:
    try:
      line = self.format(record)
      if self._file is None and self.path.parent.is_dir():
        self._open(self.path)
      if self._file is None:
        self._held.append(line)
      else:
        self._file.write(line + "\n")
        self._file.flush()
    except Exception:  # noqa: BLE001 - logging must never end the run
      self.handleError(record)

  def close(self) -> None:  # logging.shutdown calls it at exit
    self.acquire()
    try:
      if self._file is None and len(self._held) > 1:
        self._open(self.fallback)
      if self._file is not None:
        self._file.close()
        self._file = None
    finally:
      self.release()
    super().close()
