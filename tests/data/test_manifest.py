import pytest

from pe_jax.data import manifest as manifest_lib


def test_real_manifest_lists_every_file(shared_data_dir):
  manifest = manifest_lib.Manifest(shared_data_dir)
  assert len(manifest.entries) == 416  # "416 files" in the manifest's own header
  entry = manifest.entry("tweeteval/emotion/train_text.txt")
  assert (entry.lines, entry.bytes) == (3257, 306630)


def test_expected_records_counts_an_unterminated_last_line(shared_data_dir):
  manifest = manifest_lib.Manifest(shared_data_dir)
  # 1,838 newlines, 1,839 tweets: the file does not end with a newline.
  assert manifest.entry("xlm_t_umsab/english/train_text.txt").lines == 1838
  assert manifest.expected_records("xlm_t_umsab/english/train_text.txt") == 1839
  assert manifest.expected_records("retrieval_subsets/arcd/qrels/test.tsv", header_lines=1) == 702


def test_verify_rejects_a_changed_file(make_data_dir):
  root = make_data_dir({"set/a.txt": b"one\ntwo\n"})
  manifest = manifest_lib.Manifest(root)
  assert manifest.verify("set/a.txt") == root / "set/a.txt"
  (root / "set/a.txt").write_bytes(b"one\ntwo!\n")
  with pytest.raises(manifest_lib.ManifestError, match="has 9 bytes"):
    manifest.verify("set/a.txt")
  (root / "set/a.txt").write_bytes(b"one\ntwX\n")
  with pytest.raises(manifest_lib.ManifestError, match="sha256"):
    manifest.verify("set/a.txt")
  with pytest.raises(manifest_lib.ManifestError, match="not listed"):
    manifest.verify("set/b.txt")


def test_check_records_names_file_and_counts(make_data_dir):
  root = make_data_dir({"set/a.txt": b"one\ntwo\n"})
  manifest = manifest_lib.Manifest(root)
  manifest.check_records("set/a.txt", 2)
  with pytest.raises(manifest_lib.ManifestError, match=r"a\.txt: parsed 3 records.*2 lines"):
    manifest.check_records("set/a.txt", 3)


def test_missing_or_malformed_manifest(tmp_path):
  with pytest.raises(manifest_lib.ManifestError, match="MANIFEST.md not found"):
    manifest_lib.Manifest(tmp_path)
  (tmp_path / "MANIFEST.md").write_text("## Files\n\n| `a.txt` | two | 3 | abc |\n")
  with pytest.raises(manifest_lib.ManifestError, match=r"MANIFEST.md:3: malformed"):
    manifest_lib.Manifest(tmp_path)
