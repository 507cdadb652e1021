"""The one entry point to data: `load_split("tweeteval/emotion", "train") -> LabeledTexts`.

A dataset is prepared (TFDS array_record, in the tfds dir) on first use from the raw data folder,
then read back into the in-memory shapes of `pe_jax.data.examples`.

Overlaps: some splits share texts, so training on one and evaluating on the other leaks. Check
`overlaps(train_dataset, train_split, eval_dataset, eval_split)` before training:
- `xlm_t_umsab/english` is carved out of `tweeteval/sentiment` (exact text match, MANIFEST.md):
  english test (870) within sentiment test; english val (324) and 1,430 of the 1,839 english train
  tweets within sentiment val. Leak-free English sentiment: train on tweeteval/sentiment val,
  evaluate on its test, keep xlm_t_umsab/english out of training.
- `stsb_multi_mt/<lang>` and `pawsx/<lang>` are row-aligned translations of one another: the same
  split in two languages holds the same pairs.
- `tatoeba/<lang>` files share English sentences: one English sentence recurs, translated, in several
  languages' files (including deu/fra/spa/rus/jpn/cmn, the multilingual config's bitext sets).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Literal

import numpy as np
import tensorflow_datasets as tfds

from pe_jax.data import builders
from pe_jax.data import paths
from pe_jax.data.examples import LabeledTexts, ParallelTexts, RetrievalSet, TextPairs

Kind = Literal["labeling", "pairs", "retrieval"]
PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class _Dataset:
  kind: Kind
  builder: type[builders.PeJaxBuilder]
  configs: tuple[str, ...]  # retrieval: corpus, queries, qrels configs; else one
  splits: tuple[str, ...]


def _registry() -> dict[str, _Dataset]:
  registry = {}
  for family, builder, kind in (
      ("tweeteval", builders.TweetEval, "labeling"),
      ("xlm_t_umsab", builders.XlmTUmsab, "labeling"),
      ("tweet_topic_xl", builders.TweetTopicXl, "labeling"),
      ("stsb_multi_mt", builders.StsbMultiMt, "pairs"),
      ("pawsx", builders.Pawsx, "pairs"),
      ("tatoeba", builders.Tatoeba, "pairs"),
  ):
    for config in builder.BUILDER_CONFIGS:
      registry[f"{family}/{config.name}"] = _Dataset(kind, builder, (config.name,), config.splits)
  (single,) = builders.TweetTopicSingle.BUILDER_CONFIGS
  registry["tweet_topic_single"] = _Dataset(
      "labeling", builders.TweetTopicSingle, (single.name,), single.splits)
  by_set: dict[str, list] = {}
  for config in builders.RetrievalSubsets.BUILDER_CONFIGS:
    by_set.setdefault(config.set_name, []).append(config)
  for set_name, configs in by_set.items():
    by_part = {c.part: c for c in configs}
    registry[f"retrieval_subsets/{set_name}"] = _Dataset(
        "retrieval", builders.RetrievalSubsets,
        tuple(by_part[part].name for part in builders.retrieval.PARTS), by_part["qrels"].splits)
  return registry


_DATASETS = _registry()


def list_datasets() -> list[str]:
  """Every dataset name `load_split` accepts, e.g. "tweeteval/emotion", "tatoeba/deu"."""
  return sorted(_DATASETS)


def _lookup(dataset: str, split: str | None = None) -> _Dataset:
  if dataset not in _DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; known datasets: {', '.join(list_datasets())}")
  entry = _DATASETS[dataset]
  if split is not None and split not in entry.splits:
    raise ValueError(f"Unknown split {split!r} of {dataset}; its splits: {', '.join(entry.splits)}")
  return entry


def list_splits(dataset: str) -> list[str]:
  """Split names of `dataset`, in source order (known without preparing)."""
  return list(_lookup(dataset).splits)


def prepare(dataset: str, *, data_dir: PathLike | None = None, tfds_dir: PathLike | None = None,
            download: bool = False) -> list[builders.PeJaxBuilder]:
  """Prepares `dataset` in the tfds dir unless already there; returns its builder(s).

  Reads the raw data folder (`data_dir`, else $PE_JAX_DATA_DIR), checked against its MANIFEST.md;
  with `download=True` fetches the same files from the sources' pinned GitHub commits instead.
  """
  entry = _lookup(dataset)
  tfds_root = paths.resolve_tfds_dir(tfds_dir)
  result = []
  for config in entry.configs:
    builder = entry.builder(config=config, data_dir=str(tfds_root), file_format="array_record")
    # data_path checked first: is_prepared() warns about a variant folder that does not exist yet.
    if not (builder.data_path.exists() and builder.is_prepared()):
      manual_dir = None if download else str(paths.resolve_data_dir(data_dir))
      # Its bars (per split, per shuffle) fill a terminal for a second's work; the builder logs one line.
      tfds.display_progress_bar(False)
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    result.append(builder)
  return result


def load_split(dataset: str, split: str, *, data_dir: PathLike | None = None,
               tfds_dir: PathLike | None = None) -> LabeledTexts | TextPairs | RetrievalSet:
  """One split in memory: LabeledTexts (labeling), TextPairs (pairs) or RetrievalSet (retrieval).

  Prepares the dataset on first use (see `prepare`); `data_dir` is only read then. Splits are kept
  for the process: a trainer reads a task's split for its pairs and again for its k-NN evaluation,
  and an ablation reads the same splits for every run. Treat what it returns as read-only.
  """
  _lookup(dataset, split)  # an unknown name fails here, uncached
  return _load_split(dataset, split, None if data_dir is None else str(data_dir),
                     str(paths.resolve_tfds_dir(tfds_dir)))


@functools.lru_cache(maxsize=64)
def _load_split(dataset: str, split: str, data_dir: str | None,
                tfds_dir: str) -> LabeledTexts | TextPairs | RetrievalSet:
  entry = _lookup(dataset, split)
  prepared = prepare(dataset, data_dir=data_dir, tfds_dir=tfds_dir)
  name = f"{dataset}:{split}"
  if entry.kind == "labeling":
    (builder,) = prepared
    return _labeled_texts(name, builder, split)
  if entry.kind == "pairs":
    (builder,) = prepared
    records = _read_all(builder, split)
    return TextPairs(
        name=name, texts_a=[r["text_a"].decode() for r in records],
        texts_b=[r["text_b"].decode() for r in records],
        scores=np.array([r["score"] for r in records], dtype=np.float32))
  return _retrieval_set(name, *prepared, split=split)


def translation_languages(family: str) -> list[str]:
  """The languages of a family of row-aligned translations: "stsb_multi_mt" -> ["de", "en", ...]."""
  if f"{family}/" not in _TRANSLATED:
    raise ValueError(f"{family!r} holds no row-aligned translations; those that do: "
                     f"{', '.join(f.rstrip('/') for f in _TRANSLATED)}")
  return sorted(name.split("/", 1)[1] for name in _DATASETS if name.startswith(f"{family}/"))


def parallel_splits(family: str, split: str, languages: tuple[str, ...]) -> list[tuple[str, str]]:
  """(dataset, split) of every language and split that `load_parallel` reads ("train+dev": both)."""
  return [(f"{family}/{lang}", s) for lang in languages for s in split.split("+")]


def load_parallel(family: str, split: str, languages: tuple[str, ...], *, pivot: str,
                  data_dir: PathLike | None = None, tfds_dir: PathLike | None = None) -> ParallelTexts:
  """Row-aligned translations of one family in `pivot` and `languages`: sentence i is the same sentence
  in every language. Each split's pairs give both their sides (split "train+dev": train, then dev; in
  each, every first sentence, then every second). A language whose file holds another number of rows
  than the pivot's is refused, naming the file: its rows cannot be aligned."""
  entry = _lookup(f"{family}/{pivot}")
  file_of = lambda lang, s: f"{entry.builder.SOURCE.local_root}/{entry.builder.source_file(lang, s)}"
  texts: dict[str, list[str]] = {}
  for dataset, s in parallel_splits(family, split, (pivot, *languages)):
    lang = dataset.split("/", 1)[1]
    pairs = load_split(dataset, s, data_dir=data_dir, tfds_dir=tfds_dir)
    rows = len(load_split(f"{family}/{pivot}", s, data_dir=data_dir, tfds_dir=tfds_dir))
    if len(pairs) != rows:
      raise ValueError(f"{file_of(lang, s)} (raw data folder) holds {len(pairs)} rows, but the {pivot} file "
                       f"{file_of(pivot, s)} holds {rows}: a translation must be row-aligned with it")
    texts.setdefault(lang, []).extend(pairs.texts_a + pairs.texts_b)
  return ParallelTexts(name=f"{family}:{split}", pivot=pivot, texts=texts)


def _read_all(builder: builders.PeJaxBuilder, split: str) -> list[dict]:
  source = builder.as_data_source(split)
  return source.__getitems__(list(range(len(source)))) if len(source) else []


def _labeled_texts(name: str, builder: builders.PeJaxBuilder, split: str) -> LabeledTexts:
  label_names = tuple(builder.info.features["labels"].feature.names)
  records = _read_all(builder, split)
  labels = np.zeros((len(records), len(label_names)), dtype=bool)
  for i, record in enumerate(records):
    labels[i, np.asarray(record["labels"], dtype=np.int64)] = True
  return LabeledTexts(name=name, texts=[r["text"].decode() for r in records], labels=labels,
                      label_names=label_names)


def _retrieval_set(name: str, corpus: builders.PeJaxBuilder, queries: builders.PeJaxBuilder,
                   qrels: builders.PeJaxBuilder, *, split: str) -> RetrievalSet:
  """BEIR conventions: a document is `title + " " + text` (text alone without a title).

  Judgements are kept only for the queries present (ARCD's qrels name more query ids than its 50
  queries); judged documents absent from the corpus are kept, as BEIR scoring does.
  """
  docs = _read_all(corpus, split)
  query_records = _read_all(queries, split)
  query_ids = [r["id"].decode() for r in query_records]
  wanted = set(query_ids)
  judgements: dict[str, dict[str, int]] = {}
  for r in _read_all(qrels, split):
    query_id = r["query_id"].decode()
    if query_id in wanted:
      judgements.setdefault(query_id, {})[r["doc_id"].decode()] = int(r["score"])
  return RetrievalSet(
      name=name, query_ids=query_ids, queries=[r["text"].decode() for r in query_records],
      doc_ids=[r["id"].decode() for r in docs],
      docs=[_join_title(r["title"].decode(), r["text"].decode()) for r in docs],
      qrels=judgements)


def _join_title(title: str, text: str) -> str:
  return f"{title} {text}" if title else text


_TRANSLATED = ("stsb_multi_mt/", "pawsx/")
# (umsab english split, tweeteval sentiment split) pairs sharing tweets, per MANIFEST.md.
_UMSAB_IN_SENTIMENT = {("test", "test"), ("val", "val"), ("train", "val")}


def overlaps(dataset_a: str, split_a: str, dataset_b: str, split_b: str) -> str | None:
  """Why the two splits share examples (training on one and evaluating on the other leaks), or None.

  See the module docstring for the known overlaps.
  """
  _lookup(dataset_a, split_a)
  _lookup(dataset_b, split_b)
  if (dataset_a, split_a) == (dataset_b, split_b):
    return f"{dataset_a}:{split_a} is the same split"
  pairs = {(dataset_a, split_a, dataset_b, split_b), (dataset_b, split_b, dataset_a, split_a)}
  for umsab_split, sentiment_split in _UMSAB_IN_SENTIMENT:
    if ("xlm_t_umsab/english", umsab_split, "tweeteval/sentiment", sentiment_split) in pairs:
      return (f"xlm_t_umsab/english:{umsab_split} is carved out of "
              f"tweeteval/sentiment:{sentiment_split} (exact text match)")
  for family in _TRANSLATED:
    if dataset_a.startswith(family) and dataset_b.startswith(family) and split_a == split_b:
      return (f"{dataset_a}:{split_a} and {dataset_b}:{split_b} are row-aligned translations of "
              "the same pairs")
  if dataset_a.startswith("tatoeba/") and dataset_b.startswith("tatoeba/"):
    return f"{dataset_a} and {dataset_b} share English sentences"
  return None
