"""load_split on real staged data (small configs) and on synthetic broken folders."""

import json
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pe_jax.data import builders, load, manifest as manifest_lib, paths, readers
from pe_jax.data.examples import LabeledTexts, ParallelTexts, RetrievalSet, TextPairs

# (dataset, split, file whose line count the split must match)
SMALL_SPLITS = [
    ("tweeteval/emotion", "train", "tweeteval/emotion/train_text.txt"),
    ("tweeteval/emotion", "val", "tweeteval/emotion/val_labels.txt"),
    ("tweeteval/emotion", "test", "tweeteval/emotion/test_text.txt"),
    ("tweeteval/stance_climate", "train", "tweeteval/stance/climate/train_text.txt"),
    ("tweeteval/stance_climate", "test", "tweeteval/stance/climate/test_labels.txt"),
    ("tweet_topic_xl/ja", "train", "tweet_topic_xl/ja/ja_train.jsonl"),
    ("tweet_topic_xl/ja", "test", "tweet_topic_xl/ja/ja_test.jsonl"),
    ("stsb_multi_mt/en", "dev", "stsb_multi_mt/stsb-en-dev.csv"),
    ("stsb_multi_mt/en", "test", "stsb_multi_mt/stsb-en-test.csv"),
    ("pawsx/de", "dev", "pawsx/dev-de.tsv"),
    ("tatoeba/deu", "test", "tatoeba/tatoeba.deu-eng.deu"),
]


def _load(dataset, split, shared_data_dir, tfds_dir):
  return load.load_split(dataset, split, data_dir=shared_data_dir, tfds_dir=tfds_dir)


def _lines(path):
  return readers.read_text_lines(path, readers.TextStats())


@pytest.mark.parametrize("dataset,split,relpath", SMALL_SPLITS)
def test_split_sizes_match_manifest(dataset, split, relpath, shared_data_dir, tfds_dir):
  data = _load(dataset, split, shared_data_dir, tfds_dir)
  expected = manifest_lib.Manifest(shared_data_dir).expected_records(relpath)
  assert len(data) == expected
  assert data.name == f"{dataset}:{split}"


def test_emotion_labels_decode_from_mapping(shared_data_dir, tfds_dir):
  data = _load("tweeteval/emotion", "train", shared_data_dir, tfds_dir)
  assert isinstance(data, LabeledTexts)
  assert data.label_names == ("anger", "joy", "optimism", "sadness")
  assert data.labels.dtype == bool and (data.labels.sum(axis=1) == 1).all()
  raw_labels = [int(x) for x in _lines(shared_data_dir / "tweeteval/emotion/train_labels.txt")]
  np.testing.assert_array_equal(data.labels.argmax(axis=1), raw_labels)
  assert data.texts == _lines(shared_data_dir / "tweeteval/emotion/train_text.txt")


def test_stance_climate_shares_the_stance_mapping(shared_data_dir, tfds_dir):
  data = _load("tweeteval/stance_climate", "test", shared_data_dir, tfds_dir)
  assert data.label_names == ("none", "against", "favor")
  raw = [int(x) for x in _lines(shared_data_dir / "tweeteval/stance/climate/test_labels.txt")]
  np.testing.assert_array_equal(data.labels.sum(axis=0), np.bincount(raw, minlength=3))


def test_tweet_topic_xl_is_multi_hot_in_readme_order(shared_data_dir, tfds_dir):
  data = _load("tweet_topic_xl/ja", "test", shared_data_dir, tfds_dir)
  assert data.labels.shape == (800, 19)
  assert data.label_names[0] == "arts_&_culture" and data.label_names[18] == "youth_&_student_life"
  raw = [json.loads(line) for line in _lines(shared_data_dir / "tweet_topic_xl/ja/ja_test.jsonl")]
  expected = np.array([[obj[name] == 1 for name in data.label_names] for obj in raw])
  np.testing.assert_array_equal(data.labels, expected)
  per_tweet = data.labels.sum(axis=1)
  assert per_tweet.min() >= 1 and per_tweet.max() <= 5 and (per_tweet >= 2).mean() > 0.5
  assert data.texts == [obj["text"] for obj in raw]


def test_stsb_pairs_and_scores(shared_data_dir, tfds_dir):
  data = _load("stsb_multi_mt/en", "dev", shared_data_dir, tfds_dir)
  assert isinstance(data, TextPairs) and data.scores.dtype == np.float32
  assert 0.0 <= data.scores.min() and data.scores.max() <= 5.0
  assert all("\r" not in t for t in data.texts_a + data.texts_b)  # CRLF ends the record


def test_pawsx_scores_are_binary(shared_data_dir, tfds_dir):
  data = _load("pawsx/de", "dev", shared_data_dir, tfds_dir)
  assert set(np.unique(data.scores)) == {0.0, 1.0}
  assert (data.scores == 0).sum() == 1169  # "≈ 57 % label 0"


def test_tatoeba_keeps_line_alignment(shared_data_dir, tfds_dir):
  data = _load("tatoeba/deu", "test", shared_data_dir, tfds_dir)
  assert data.texts_a == _lines(shared_data_dir / "tatoeba/tatoeba.deu-eng.deu")
  assert data.texts_b == _lines(shared_data_dir / "tatoeba/tatoeba.deu-eng.eng")
  assert (data.scores == 1.0).all()


def test_tatoeba_has_a_config_per_language_present(shared_data_dir):
  files = (shared_data_dir / "tatoeba").glob("tatoeba.*")
  present = {p.name.split(".")[1].split("-")[0] for p in files}
  assert present == set(builders.pairs.TATOEBA_LANGUAGES)


@pytest.mark.parametrize("set_name,num_docs,qrels_rows,answerable", [
    ("dbpedia", 5000, 3709, 40),  # header line in qrels/test.tsv
    ("msmarco", 5000, 4102, 43),  # no header line
    ("arcd", 255, 50, 49),  # 702 qrels rows, only 50 for the 50 queries present
])
def test_retrieval_sets_match_manifest(set_name, num_docs, qrels_rows, answerable,
                                       shared_data_dir, tfds_dir):
  data = _load(f"retrieval_subsets/{set_name}", "test", shared_data_dir, tfds_dir)
  assert isinstance(data, RetrievalSet)
  assert (len(data.queries), len(data.docs)) == (50, num_docs)
  assert set(data.qrels) <= set(data.query_ids)
  assert sum(len(judged) for judged in data.qrels.values()) == qrels_rows
  in_corpus = set(data.doc_ids)
  # MANIFEST: "queries with >=1 positive doc in corpus"
  assert sum(any(grade > 0 and doc in in_corpus for doc, grade in judged.items())
             for judged in data.qrels.values()) == answerable
  first = json.loads(_lines(shared_data_dir / f"retrieval_subsets/{set_name}/corpus.jsonl")[0])
  title = first.get("title", "")
  assert data.docs[0] == (f"{title} {first['text']}" if title else first["text"])


def test_list_datasets_and_splits():
  names = load.list_datasets()
  assert len(names) == 11 + 8 + 4 + 1 + 11 + 7 + 112 + 3
  for name in ("tweeteval/stance_hillary", "tweet_topic_single", "xlm_t_umsab/arabic",
               "retrieval_subsets/msmarco", "tweet_topic_xl/gr"):
    assert name in names
  assert load.list_splits("tweeteval/sentiment") == ["val", "test"]
  assert load.list_splits("tweet_topic_single")[0] == "train_2020"


def test_unknown_dataset_lists_known_ones(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown dataset 'tweeteval/emotions'.*tweeteval/emotion"):
    load.load_split("tweeteval/emotions", "train", tfds_dir=tmp_path)


def test_unknown_split_lists_splits(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown split 'train' of tweeteval/sentiment.*val, test"):
    load.load_split("tweeteval/sentiment", "train", tfds_dir=tmp_path)


def test_unprepared_without_data_dir_says_how(tmp_path, monkeypatch):
  monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="PE_JAX_DATA_DIR"):
    load.load_split("pawsx/en", "dev", tfds_dir=tmp_path)


def test_overlaps():
  assert "carved out" in load.overlaps("xlm_t_umsab/english", "train", "tweeteval/sentiment", "val")
  assert load.overlaps("tweeteval/sentiment", "test", "xlm_t_umsab/english", "test")
  assert load.overlaps("tweeteval/sentiment", "val", "tweeteval/sentiment", "test") is None
  assert load.overlaps("xlm_t_umsab/english", "train", "tweeteval/sentiment", "test") is None
  assert load.overlaps("xlm_t_umsab/french", "test", "tweeteval/sentiment", "test") is None
  assert "translations" in load.overlaps("stsb_multi_mt/de", "test", "stsb_multi_mt/en", "test")
  assert load.overlaps("stsb_multi_mt/de", "train", "stsb_multi_mt/en", "test") is None
  assert "same split" in load.overlaps("pawsx/de", "dev", "pawsx/de", "dev")
  assert "share English sentences" in load.overlaps("tatoeba/ita", "test", "tatoeba/deu", "test")
  with pytest.raises(ValueError, match="Unknown split"):
    load.overlaps("tweeteval/sentiment", "train", "xlm_t_umsab/english", "train")


# --- synthetic folders: errors surface through the builder with file and line -------------------

_EMOTION_MAPPING = b"0\tanger\n1\tjoy\n2\toptimism\n3\tsadness"


def _emotion_files(train_text: bytes, train_labels: bytes) -> dict[str, bytes]:
  files = {"tweeteval/emotion/mapping.txt": _EMOTION_MAPPING}
  for split in ("train", "val", "test"):
    files[f"tweeteval/emotion/{split}_text.txt"] = train_text if split == "train" else b"x\n"
    files[f"tweeteval/emotion/{split}_labels.txt"] = train_labels if split == "train" else b"0\n"
  return files


def test_malformed_label_names_file_and_line(make_data_dir, tmp_path):
  root = make_data_dir(_emotion_files(b"a\nb\nc\n", b"0\n3\n7\n"))
  match = r"train_labels\.txt:3: label 7 is outside 0..3"
  with pytest.raises(readers.DataFormatError, match=match):
    load.load_split("tweeteval/emotion", "train", data_dir=root, tfds_dir=tmp_path / "tfds")


def test_bad_utf8_and_empty_tweets_are_kept_and_counted(make_data_dir, tmp_path):
  root = make_data_dir(_emotion_files(b"caf\xe9 \xff\n\n  \nok\n", b"0\n1\n2\n3\n"))
  data = load.load_split("tweeteval/emotion", "train", data_dir=root, tfds_dir=tmp_path / "tfds")
  assert data.texts == ["caf\ufffd \ufffd", "", "  ", "ok"]
  (builder,) = load.prepare("tweeteval/emotion", tfds_dir=tmp_path / "tfds")
  reloaded = tfds.builder_from_directory(str(builder.data_path))
  assert reloaded.info.metadata["text_stats"]["train"] == {"utf8_replacements": 2, "empty_texts": 2}


def test_count_mismatch_with_manifest_is_an_error(make_data_dir, tmp_path):
  files = _emotion_files(b"a\nb\n", b"0\n1\n")
  root = make_data_dir(files, lines={"tweeteval/emotion/train_text.txt": 3})
  with pytest.raises(manifest_lib.ManifestError, match=r"train_text\.txt: parsed 2 records"):
    load.load_split("tweeteval/emotion", "train", data_dir=root, tfds_dir=tmp_path / "tfds")


def test_mapping_must_match_the_builder(make_data_dir, tmp_path):
  files = _emotion_files(b"a\n", b"0\n")
  files["tweeteval/emotion/mapping.txt"] = b"0\tanger\n1\tjoy\n2\toptimism\n3\tfear"
  root = make_data_dir(files)
  with pytest.raises(ValueError, match=r"mapping\.txt: label names .*fear"):
    load.load_split("tweeteval/emotion", "train", data_dir=root, tfds_dir=tmp_path / "tfds")


@pytest.mark.slow
def test_emoji_all_splits(shared_data_dir, tfds_dir):
  sizes = {split: len(_load("tweeteval/emoji", split, shared_data_dir, tfds_dir))
           for split in ("train", "val", "test")}
  assert sizes == {"train": 45000, "val": 5000, "test": 50000}


@pytest.mark.slow
def test_every_dataset_prepares_with_manifest_checks(shared_data_dir, tfds_dir):
  # The builders check every file's size, sha256 and record count against MANIFEST.md.
  for dataset in load.list_datasets():
    for split in load.list_splits(dataset):
      data = _load(dataset, split, shared_data_dir, tfds_dir)
      assert len(data.doc_ids if isinstance(data, RetrievalSet) else data) > 0, (dataset, split)


def test_download_path_fetches_pinned_raw_urls(shared_data_dir, tmp_path, monkeypatch):
  # No network here: serve each raw GitHub URL from the staged copy of the same file.
  prefix = ("https://raw.githubusercontent.com/cardiffnlp/tweeteval/"
            "4fbd22cd78421f05b1ecdb4fc5725bc7a7bd8f66/datasets/")
  fetched = []

  def fake_download(self, url):
    assert url.startswith(prefix), url
    fetched.append(url[len(prefix):])
    return shared_data_dir / "tweeteval" / url[len(prefix):]

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  load.prepare("tweeteval/stance_climate", tfds_dir=tmp_path, download=True)
  assert "stance/mapping.txt" in fetched and "stance/climate/test_labels.txt" in fetched
  data = load.load_split("tweeteval/stance_climate", "val", tfds_dir=tmp_path)
  assert len(data) == 40


def test_parallel_texts_are_row_aligned_translations(shared_data_dir, tfds_dir):
  data = load.load_parallel("stsb_multi_mt", "train+dev", ("de", "ja"), pivot="en", data_dir=shared_data_dir,
                            tfds_dir=tfds_dir)
  assert isinstance(data, ParallelTexts) and list(data.texts) == ["en", "de", "ja"]
  # Each split gives its first sentences, then its second ones; train, then dev.
  english = {s: _load("stsb_multi_mt/en", s, shared_data_dir, tfds_dir) for s in ("train", "dev")}
  assert len(data) == 2 * (len(english["train"]) + len(english["dev"]))
  train_de = _load("stsb_multi_mt/de", "train", shared_data_dir, tfds_dir)
  n = len(train_de)
  assert data.texts["de"][:n] == train_de.texts_a and data.texts["de"][n:2 * n] == train_de.texts_b
  assert data.texts["en"][0] == "A plane is taking off." and data.texts["de"][0] == "Ein Flugzeug hebt gerade ab."
  assert load.parallel_splits("stsb_multi_mt", "train+dev", ("en", "de")) == [
      ("stsb_multi_mt/en", "train"), ("stsb_multi_mt/en", "dev"), ("stsb_multi_mt/de", "train"),
      ("stsb_multi_mt/de", "dev")]


def test_a_translation_whose_rows_differ_from_the_english_file_is_named(monkeypatch):
  def fake(dataset, split, **kw):
    n = 4 if dataset == "stsb_multi_mt/ja" and split == "dev" else 5
    return TextPairs(f"{dataset}:{split}", ["x"] * n, ["y"] * n, np.zeros(n, np.float32))

  monkeypatch.setattr(load, "load_split", fake)
  with pytest.raises(ValueError, match=r"^stsb_multi_mt/stsb-ja-dev.csv \(raw data folder\) holds 4 rows, but the en "
                                       r"file stsb_multi_mt/stsb-en-dev.csv holds 5: a translation must be row-aligned"):
    load.load_parallel("stsb_multi_mt", "train+dev", ("de", "ja"), pivot="en")


def test_translation_languages():
  assert load.translation_languages("stsb_multi_mt") == ["de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh"]
  with pytest.raises(ValueError, match="'tatoeba' holds no row-aligned translations; those that do: stsb_multi_mt, pawsx"):
    load.translation_languages("tatoeba")


def test_preparing_leaves_no_temporary_folders(make_data_dir, tmp_path, monkeypatch):
  # TFDS's DatasetInfo.initialize_from_bucket makes (and keeps) a temp folder for every builder whose data
  # is not prepared yet; pe_jax's builders skip it.
  temp = tmp_path / "temp"
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  root = make_data_dir(_emotion_files(b"a\nb\n", b"0\n1\n"))
  load.load_split("tweeteval/emotion", "train", data_dir=root, tfds_dir=tmp_path / "tfds")
  assert list(temp.iterdir()) == []
