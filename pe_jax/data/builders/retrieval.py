"""Small BEIR-format retrieval sets: one config per (set, part), parts being corpus/queries/qrels.

The three parts have different features, hence separate configs; each has the single split `test`
(BEIR shares corpus and queries across splits, and `qrels/test.tsv` is the only judged split).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from pe_jax.data import readers
from pe_jax.data.builders import base

SOURCE = base.Source(
    repo="agentset-ai/embedding-leaderboard", commit="7a1376ca20a006b470e3bbb4a08b17affd380d90",
    remote_root="datasets", local_root="retrieval_subsets")

PARTS = ("corpus", "queries", "qrels")
_QRELS_HEADER = ("query-id", "corpus-id", "score")
# dbpedia and arcd start qrels/test.tsv with a header line, msmarco does not.
_SETS = {"dbpedia": True, "msmarco": False, "arcd": True}


@dataclasses.dataclass(eq=False, kw_only=True)
class RetrievalConfig(base.Config):
  set_name: str
  part: str  # one of PARTS
  qrels_header: bool


class RetrievalSubsets(base.PeJaxBuilder):
  """DBpedia-entity, MS MARCO and ARCD subsets (50 queries each) in BEIR layout."""

  name = "pe_jax_retrieval_subsets"
  VERSION = tfds.core.Version("1.0.0")
  SOURCE = SOURCE
  DESCRIPTION = ("BEIR-format subsets from agentset-ai/embedding-leaderboard: corpus (id, title, "
                 "text), queries (id, text) and graded judgements (query_id, doc_id, score).")
  BUILDER_CONFIGS = [
      RetrievalConfig(name=f"{set_name}_{part}", set_name=set_name, part=part,
                      qrels_header=header, splits=("test",))
      for set_name, header in _SETS.items() for part in PARTS
  ]

  def _features(self):
    text = tfds.features.Text
    return tfds.features.FeaturesDict({
        "corpus": {"id": text(), "title": text(), "text": text()},
        "queries": {"id": text(), "text": text()},
        "qrels": {"query_id": text(), "doc_id": text(),
                  "score": tfds.features.Scalar(dtype=np.int32)},
    }[self.builder_config.part])

  def _read_split(self, files, split, stats):
    config = self.builder_config
    if config.part == "qrels":
      return self._read_qrels(files, f"{config.set_name}/qrels/{split}.tsv", stats)
    relpath = f"{config.set_name}/{config.part}.jsonl"
    path = files.path(relpath)
    records = readers.read_jsonl(path, stats)
    files.check_records(relpath, len(records))
    examples, seen = [], set()
    for lineno, obj in records:
      if "_id" not in obj or "text" not in obj:
        raise readers.DataFormatError(path, lineno, "a BEIR record needs '_id' and 'text'")
      doc_id = str(obj["_id"])
      if doc_id in seen:
        raise readers.DataFormatError(path, lineno, f"duplicate _id {doc_id!r}")
      seen.add(doc_id)
      example = {"id": doc_id, "text": stats.text(obj["text"], path, lineno)}
      if config.part == "corpus":
        # ARCD and MS MARCO titles are absent or empty; that is not an empty text.
        example["title"] = stats.text(obj.get("title", ""), path, lineno, "title",
                                      count_empty=False)
      examples.append(example)
    return examples

  def _read_qrels(self, files, relpath, stats):
    path = files.path(relpath)
    header = _QRELS_HEADER if self.builder_config.qrels_header else None
    rows = readers.read_tsv(path, stats, num_fields=3, header=header)
    files.check_records(relpath, len(rows), header_lines=int(header is not None))
    return [{"query_id": query_id, "doc_id": doc_id,
             "score": readers.parse_int(score, path, lineno, "score")}
            for lineno, (query_id, doc_id, score) in rows]
