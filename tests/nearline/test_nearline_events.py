"""Event validation: every kind of bad event gets its reason code; good ones come out normalised."""

from __future__ import annotations

import pytest

from pe_jax.nearline.events import Post, Rejection, encode_event, parse_event


@pytest.mark.parametrize("body, code", [
    (b"\xff\xfe{", "not_utf8"),
    (b"{\"id\": 1, \"text\": ", "not_json"),
    (b"[1, 2]", "not_object"),
    (b"\"just a string\"", "not_object"),
    (b"{\"text\": \"hello\"}", "no_id"),
    (b"{\"id\": null, \"text\": \"hello\"}", "bad_id"),
    (b"{\"id\": true, \"text\": \"hello\"}", "bad_id"),
    (b"{\"id\": 1.5, \"text\": \"hello\"}", "bad_id"),
    (b"{\"id\": \"  \", \"text\": \"hello\"}", "bad_id"),
    (b"{\"id\": 7}", "no_text"),
    (b"{\"id\": 7, \"text\": 42}", "bad_text"),
    (b"{\"id\": 7, \"text\": [\"a\"]}", "bad_text"),
    (b"{\"id\": 7, \"text\": \" \\n \"}", "empty_text"),
    (b"{\"id\": 7, \"text\": \"hello\", \"created_at\": \"yesterday\"}", "bad_created_at"),
    (b"{\"id\": 7, \"text\": \"hello\", \"created_at\": [1]}", "bad_created_at"),
    (b"{\"id\": 7, \"text\": \"hello\", \"created_at\": false}", "bad_created_at"),
    (b"{\"id\": 7, \"text\": \"hello\", \"created_at\": NaN}", "bad_created_at"),
    (b"{\"id\": 7, \"text\": \"hello\", \"lang\": 3}", "bad_lang"),
])
def test_bad_events_are_rejected_with_their_reason(body, code):
  got = parse_event(body)
  assert isinstance(got, Rejection), got
  assert got.code == code, got
  assert str(got).startswith(code + ": ") and got.detail


def test_the_reason_names_the_post_and_the_limit():
  got = parse_event(encode_event("p9", "x" * 101), max_chars=100)
  assert got == Rejection("text_too_long", "post p9: text has 101 characters, over the limit 100")
  assert isinstance(parse_event(encode_event("p9", "x" * 100), max_chars=100), Post)


def test_good_events_round_trip_with_optional_fields():
  assert parse_event(encode_event(12, "hello world")) == Post("12", "hello world")
  got = parse_event(encode_event("a", "héllo 😀", created_at=1700000000.5, lang="fr"))
  assert got == Post("a", "héllo 😀", 1700000000.5, "fr")


def test_created_at_accepts_iso_8601_and_takes_naive_times_as_utc():
  assert parse_event(b'{"id": 1, "text": "a", "created_at": "2024-01-01T00:00:00Z"}').created_at == 1704067200.0
  assert parse_event(b'{"id": 1, "text": "a", "created_at": "2024-01-01T00:00:00"}').created_at == 1704067200.0
  assert parse_event(b'{"id": 1, "text": "a", "created_at": "2024-01-01T01:00:00+01:00"}').created_at == 1704067200.0
  assert parse_event(b'{"id": 1, "text": "a", "created_at": null}').created_at is None


def test_a_lone_surrogate_survives_encoding():
  got = parse_event(encode_event(1, "bad \ud800 half"))
  assert isinstance(got, Post) and got.text == "bad \ud800 half"
