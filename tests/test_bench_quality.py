"""scripts/bench_quality.py's pure parts: the peer's batches and loss, the table and its verdicts."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bq():
  spec = importlib.util.spec_from_file_location("bench_quality", REPO / "scripts" / "bench_quality.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def one_hot(label_ids, num_labels):
  labels = np.zeros((len(label_ids), num_labels), bool)
  labels[np.arange(len(label_ids)), label_ids] = True
  return labels


# --- label-balanced batches ----------------------------------------------------------------------------


def test_label_counts_split_evenly_and_respect_small_labels(bq):
  assert bq.label_counts([100] * 8, 48) == [6] * 8
  assert bq.label_counts([100] * 3, 48) == [16, 16, 16]
  assert bq.label_counts([100] * 5, 48) == [10, 10, 10, 9, 9]
  # stance_climate's train split: 'against' has 13 texts; the others take its share.
  counts = bq.label_counts([151, 13, 191], 48)
  assert counts[1] == 13 and sum(counts) == 48 and max(counts) - min(counts[0], counts[2]) <= 1
  # Not enough texts at all: the batch stays full (the sampler draws with replacement).
  assert sum(bq.label_counts([3, 2], 48)) == 48


def test_sampler_draws_k_labels_times_m_texts_with_positives_and_negatives(bq):
  labels = one_hot(np.repeat(np.arange(12), 20), 12)
  sampler = bq.LabelBalancedSampler(labels, batch_size=48, max_labels=8, seed=0)
  for _ in range(20):
    idx = sampler()
    assert idx.shape == (48,) and len(set(idx.tolist())) == 48  # no text twice
    batch_labels = labels[idx].argmax(1)
    values, counts = np.unique(batch_labels, return_counts=True)
    assert len(values) == 8 and (counts == 6).all()
    same = labels[idx].astype(int) @ labels[idx].T.astype(int) > 0
    np.fill_diagonal(same, False)
    assert same.any(1).all() and (~same).sum(1).min() > 1  # every text: a positive and negatives


def test_translation_batches_hold_sentences_in_english_and_two_other_languages(bq):
  from pe_jax.data.examples import ParallelTexts

  # STS-B repeats a sentence across rows ("s0" twice): it is drawn once, so it is never its own negative.
  english = ["s0", "s1", "s2", "s0", "s3", "s4", "s5", "s6"]
  data = ParallelTexts("translation", "en", {"en": english, **{lang: [f"{lang}:{t}" for t in english]
                                                                  for lang in ("de", "fr", "ja")}})
  sampler = bq.TranslationSampler(data, batch_size=18, seed=0)
  for _ in range(10):
    texts, labels = sampler()
    assert len(texts) == 18 and labels.shape == (18, 6)
    np.testing.assert_array_equal(labels.argmax(1), np.repeat(np.arange(6), 3))
    sentences = [texts[3 * k] for k in range(6)]
    assert len(set(sentences)) == 6 and set(sentences) <= set(english)  # English first, no sentence twice
    for k, sentence in enumerate(sentences):
      first, second = texts[3 * k + 1], texts[3 * k + 2]
      assert first.split(":")[1] == second.split(":")[1] == sentence  # translations of that sentence
      assert first.split(":")[0] != second.split(":")[0]  # in two different languages
  again = bq.TranslationSampler(data, batch_size=18, seed=0)
  assert again()[0] == bq.TranslationSampler(data, batch_size=18, seed=0)()[0]  # seeded


def test_sampler_takes_all_labels_when_fewer_than_max_and_skips_singletons(bq):
  # 3 usable labels (one small) and a label with a single text, which can have no positive.
  labels = one_hot(np.array([0] * 50 + [1] * 5 + [2] * 40 + [3]), 4)
  sampler = bq.LabelBalancedSampler(labels, batch_size=48, max_labels=8, seed=1)
  for _ in range(10):
    batch_labels = labels[sampler()].argmax(1)
    assert sorted(np.unique(batch_labels)) == [0, 1, 2]
    assert np.bincount(batch_labels, minlength=4).tolist()[1] == 5
    assert len(batch_labels) == 48


def test_sampler_is_deterministic_by_seed(bq):
  labels = one_hot(np.random.default_rng(0).integers(0, 10, 500), 10)
  draw = lambda seed: [bq.LabelBalancedSampler(labels, seed=seed)() for _ in range(5)]
  first, again, other = draw(3), draw(3), draw(4)
  assert all((a == b).all() for a, b in zip(first, again))
  assert any((a != b).any() for a, b in zip(first, other))


def test_sampler_refuses_a_task_without_negatives(bq):
  with pytest.raises(ValueError, match="at least 2"):
    bq.LabelBalancedSampler(one_hot(np.array([0, 0, 0, 1]), 2), name="tiny")


# --- the SupCon loss -----------------------------------------------------------------------------------


def test_supcon_loss_matches_a_hand_computation(bq):
  torch = pytest.importorskip("torch")
  # Texts 0 and 1 share a label and point the same way; text 2 has no positive and is left out.
  # Text 0: positive 1 (cosine 1), the other 2 (cosine 0): -log(e^1 / (e^1 + e^0)) = log(1 + e^-1); same for 1.
  emb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # normalised inside
  labels = torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.bool)
  loss = bq.supcon_loss(emb, labels, temperature=1.0)
  assert float(loss) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_supcon_loss_matches_a_reference_with_several_positives(bq):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(6, 4))
  labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]], bool)  # multi-label row 1
  t = 0.05
  unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  sims = unit @ unit.T / t
  losses = []
  for i in range(6):
    others = [j for j in range(6) if j != i]
    log_denominator = np.log(np.sum(np.exp(sims[i, others])))
    positives = [j for j in others if (labels[i] & labels[j]).any()]
    losses.append(-np.mean([sims[i, p] - log_denominator for p in positives]))
  x = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
  loss = bq.supcon_loss(x, torch.from_numpy(labels), temperature=t)
  assert loss.item() == pytest.approx(np.mean(losses), rel=1e-9)
  loss.backward()
  assert torch.isfinite(x.grad).all()  # the masked diagonal (-inf) sends no NaN back


def test_warmup_is_40_steps_or_10_percent_of_a_short_run(bq):
  assert bq.warmup_steps(480) == 40
  assert bq.warmup_steps(100) == 10
  assert bq.warmup_steps(4) == 1
  assert bq.warmup_steps(1) == 0


# --- the table -----------------------------------------------------------------------------------------


def test_table_rows_columns_and_noise_verdicts(bq):
  assert bq.standard_error(0.5, 100) == pytest.approx(0.05)
  results = {
      "base": {"emotion/triplet_acc": 0.60, "irony/triplet_acc": 0.55, "triplet_acc/mean": 0.575,
               "zs_sts/sts_spearman": 0.80},
      "peer": {"emotion/triplet_acc": 0.79, "irony/triplet_acc": 0.60, "triplet_acc/mean": 0.695,
               "zs_sts/sts_spearman": 0.70},
      "ours": {"emotion/triplet_acc": 0.80, "irony/triplet_acc": 0.70, "triplet_acc/mean": 0.75,
               "zs_sts/sts_spearman": 0.75},
  }
  table = bq.format_table(results, {"emotion/triplet_acc": 1000, "irony/triplet_acc": 1000,
                                    "triplet_acc/mean": 2000})
  lines = table.splitlines()
  assert lines[0] == "| metric | base | peer | pe_jax | pe_jax − base | pe_jax − peer | SE |"
  rows = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ") for line in lines[2:]}
  assert list(rows) == ["emotion/triplet_acc", "irony/triplet_acc", "triplet_acc/mean", "zs_sts/sts_spearman"]
  emotion = [c.strip() for c in rows["emotion/triplet_acc"]]
  se = math.sqrt(0.8 * 0.2 / 1000)  # 0.0126: 2 SE = 0.025
  assert emotion[1:4] == ["0.6000", "0.7900", "0.8000"]
  assert emotion[4] == "+0.2000"  # vs base: far outside the noise
  assert emotion[5] == "+0.0100 (within noise)"  # vs peer: inside 2 SE
  assert emotion[6] == f"{se:.4f}"
  irony = [c.strip() for c in rows["irony/triplet_acc"]]
  assert irony[5] == "+0.1000"
  sts = [c.strip() for c in rows["zs_sts/sts_spearman"]]
  assert sts[4:] == ["-0.0500", "+0.0500", "—"]  # no SE, so no verdict


def test_table_with_a_skipped_model(bq):
  table = bq.format_table({"base": {"a/triplet_acc": 0.6}, "peer": None, "ours": {"a/triplet_acc": 0.61}},
                          {"a/triplet_acc": 200})
  row = [c.strip() for c in table.splitlines()[2].strip("|").split(" | ")]
  assert row == ["a/triplet_acc", "0.6000", "—", "0.6100", "+0.0100 (within noise)", "—", "0.0345"]


def test_times_table_gives_the_peer_to_ours_ratio(bq):
  records = {"base": {"steps": 0, "texts_seen": 0, "train_seconds": 0.0, "score_seconds": 5.0},
             "peer": {"steps": 10, "texts_seen": 480, "train_seconds": 30.0, "score_seconds": 6.0},
             "ours": {"steps": 4, "texts_seen": 480, "train_seconds": 12.0, "score_seconds": 4.0, "dtype": "bfloat16"}}
  text = bq.format_times(records)
  assert "| peer | float32 | 10 | 480 | 30.0 | 6.0 |" in text  # records saved before the column: float32
  assert "| pe_jax | bfloat16 | 4 | 480 | 12.0 | 4.0 |" in text
  assert "peer / pe_jax: 2.50x (30.0 s / 12.0 s)" in text
  assert "peer / pe_jax" not in bq.format_times({**records, "peer": None})


def test_times_table_with_repeats_gives_medians_every_run_and_the_ratio_of_minimums(bq):
  records = {"base": None,
             "peer": {"steps": 10, "texts_seen": 480, "train_seconds": 30.0, "train_seconds_runs": [30.0, 26.0, 33.0]},
             "ours": {"steps": 4, "texts_seen": 480, "train_seconds": 12.0, "train_seconds_runs": [12.0, 15.0, 14.0]}}
  text = bq.format_times(records)
  assert "| peer | float32 | 10 | 480 | 30.0 (median of 3) |" in text
  assert "| pe_jax | float32 | 4 | 480 | 14.0 (median of 3) |" in text
  assert "peer / pe_jax: 2.14x (30.0 s / 14.0 s)" in text
  assert "peer 30.0, 26.0, 33.0 s; pe_jax 12.0, 15.0, 14.0 s; ratio of the minimums 2.17x, of the maximums 2.20x" in text


def test_repeats_alternate_the_systems_and_resume_where_a_saved_record_stopped(bq):
  calls, saved = [], []
  clock = iter(range(100, 200))

  def timer(model):
    return lambda: calls.append(model) or float(next(clock))

  records = {"peer": {"train_seconds": 30.0}, "ours": {"train_seconds": 12.0}}
  bq.time_repeats(records, 4, {"peer": timer("peer"), "ours": timer("ours")}, on_run=saved.append)
  assert calls == ["ours", "peer", "peer", "ours", "ours", "peer"]  # the scored runs went peer, then ours
  assert records["peer"]["train_seconds_runs"] == [30.0, 101.0, 102.0, 105.0]
  assert records["ours"]["train_seconds_runs"] == [12.0, 100.0, 103.0, 104.0]
  assert saved == calls

  calls.clear()  # a benchmark stopped after the peer's third run: only what is missing runs
  records = {"peer": {"train_seconds": 30.0, "train_seconds_runs": [30.0, 31.0, 32.0]},
             "ours": {"train_seconds": 12.0, "train_seconds_runs": [12.0, 13.0]}}
  bq.time_repeats(records, 3, {"peer": timer("peer"), "ours": timer("ours")})
  assert calls == ["ours"] and len(records["ours"]["train_seconds_runs"]) == 3


def test_a_peer_temperature_or_dtype_off_the_default_is_part_of_the_peers_fingerprint_only(bq):
  from configs import multitask

  config = multitask.get_config("demo")
  assert bq.fingerprint(config, "peer", 240) == bq.fingerprint(config, "peer", 240, bq.PEER_TEMPERATURE)
  warmer = bq.fingerprint(config, "peer", 240, 0.2)
  assert warmer["peer_temperature"] == 0.2 and warmer != bq.fingerprint(config, "peer", 240)
  assert bq.fingerprint(config, "ours", 240, 0.2) == bq.fingerprint(config, "ours", 240)
  mixed = bq.fingerprint(config, "peer", 240, bq.PEER_TEMPERATURE, "bfloat16")
  assert mixed["peer_dtype"] == "bfloat16" and "peer_dtype" not in bq.fingerprint(config, "peer", 240)
  assert bq.fingerprint(config, "ours", 240, bq.PEER_TEMPERATURE, "bfloat16") == bq.fingerprint(config, "ours", 240)


# --- each system in a process of its own ---------------------------------------------------------------


def test_a_system_runs_in_a_fresh_process_and_its_error_reaches_the_caller(bq):
  assert bq.in_fresh_process(os.getpid) != os.getpid()
  with pytest.raises(ValueError, match="invalid literal"):
    bq.in_fresh_process(int, "not a number")


@pytest.mark.slow
def test_the_smoke_benchmark_scores_the_base_here_and_trains_ours_in_a_child(shared_data_dir, tfds_dir, tmp_path):
  workdir = tmp_path / "bench"
  env = {**os.environ, "PE_JAX_DATA_DIR": str(shared_data_dir), "PE_JAX_TFDS_DIR": str(tfds_dir)}
  done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_quality.py"), "--config",
                         str(REPO / "configs" / "multitask.py") + ":smoke", "--config.total_steps=4",
                         "--workdir", str(workdir), "--repeats=2"], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  ours = json.loads((workdir / "ours.json").read_text())
  assert ours["steps"] == 4 and ours["train_seconds"] > 0 and "triplet_acc/mean" in ours["results"]
  assert (workdir / "ours_run" / "train_time.json").exists()
  assert "| pe_jax | float32 | 4 |" in (workdir / "quality.md").read_text()
  assert "peer skipped: model.random_init" in done.stdout
  assert "--repeats: not timed again (it needs both the peer and pe_jax" in done.stdout
