import pytest

from pe_jax.data import readers


def test_bad_utf8_is_replaced_and_counted(tmp_path):
  path = tmp_path / "t.txt"
  # Two invalid sequences, plus a literal U+FFFD that must not be counted.
  path.write_bytes(b"ok \xc3\xa9\n\xff bad \xfe\n\xef\xbf\xbd literal\n")
  stats = readers.TextStats()
  assert readers.read_text_lines(path, stats) == ["ok é", "\ufffd bad \ufffd", "\ufffd literal"]
  assert stats.utf8_replacements == 2


def test_lines_split_on_newline_only(tmp_path):
  path = tmp_path / "t.txt"
  path.write_bytes("a\u2028b\x85c\r\n\nlast".encode())
  stats = readers.TextStats()
  lines = readers.read_text_lines(path, stats)
  assert lines == ["a\u2028b\x85c\r", "", "last"]
  assert [stats.text(line, path, i) for i, line in enumerate(lines, 1)] == lines
  assert stats.empty_texts == 1


def test_lone_surrogate_from_json_is_replaced(tmp_path):
  path = tmp_path / "t.jsonl"
  path.write_bytes(b'{"text": "a\\ud83d b \\ud83d\\ude00"}\n')
  stats = readers.TextStats()
  [(line, obj)] = readers.read_jsonl(path, stats)
  assert stats.text(obj["text"], path, line) == "a\ufffd b \U0001F600"
  assert stats.utf8_replacements == 1


def test_jsonl_errors_name_file_and_line(tmp_path):
  path = tmp_path / "t.jsonl"
  path.write_bytes(b'{"text": "a"}\n{"text": \n')
  with pytest.raises(readers.DataFormatError, match=r"t\.jsonl:2: invalid JSON") as err:
    readers.read_jsonl(path, readers.TextStats())
  assert (err.value.path, err.value.line) == (str(path), 2)
  path.write_bytes(b'{"text": "a"}\n[1]\n')
  with pytest.raises(readers.DataFormatError, match=r":2: expected a JSON object"):
    readers.read_jsonl(path, readers.TextStats())


def test_tsv_fields_and_header(tmp_path):
  path = tmp_path / "q.tsv"
  path.write_bytes(b'h1\th2\nq1\t"d 1"\nq2\n')
  with pytest.raises(readers.DataFormatError, match=r"q\.tsv:3: expected 2 tab-separated"):
    readers.read_tsv(path, readers.TextStats(), num_fields=2, header=("h1", "h2"))
  with pytest.raises(readers.DataFormatError, match=r":1: expected header"):
    readers.read_tsv(path, readers.TextStats(), num_fields=2, header=("query-id", "corpus-id"))
  path.write_bytes(b'h1\th2\nq1\t"d 1"\n')
  rows = readers.read_tsv(path, readers.TextStats(), num_fields=2, header=("h1", "h2"))
  assert rows == [(2, ["q1", '"d 1"'])]  # no CSV quoting in TSVs


def test_csv_quoting_and_line_numbers(tmp_path):
  path = tmp_path / "s.csv"
  path.write_bytes(b'a,b,1.0\r\n"x, ""y""","multi\nline",2\r\nc,d,3\r\nbroken,4\r\n')
  with pytest.raises(readers.DataFormatError, match=r"s\.csv:5: expected 3 CSV fields, got 2"):
    readers.read_csv(path, readers.TextStats(), num_fields=3)
  path.write_bytes(b'a,b,1.0\r\n"x, ""y""","multi\nline",2\r\nc,d,3\r\n')
  rows = readers.read_csv(path, readers.TextStats(), num_fields=3)
  assert rows == [(1, ["a", "b", "1.0"]), (2, ['x, "y"', "multi\nline", "2"]),
                  (4, ["c", "d", "3"])]


def test_number_parsing_errors(tmp_path):
  with pytest.raises(readers.DataFormatError, match=r"f:7: label 4 is outside 0..3"):
    readers.parse_int("4", "f", 7, "label", allowed=range(4))
  with pytest.raises(readers.DataFormatError, match=r"f:2: label 'x' is not an integer"):
    readers.parse_int("x", "f", 2, "label")
  with pytest.raises(readers.DataFormatError, match=r"f:3: score 5.5 is outside"):
    readers.parse_float("5.5", "f", 3, "score", low=0.0, high=5.0)
