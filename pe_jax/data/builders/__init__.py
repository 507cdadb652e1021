"""TFDS builders (array_record, no TensorFlow) for the staged datasets; importing registers them."""

from pe_jax.data.builders.base import PeJaxBuilder
from pe_jax.data.builders.pairs import Pawsx, StsbMultiMt, Tatoeba
from pe_jax.data.builders.retrieval import RetrievalSubsets
from pe_jax.data.builders.tweet_topic import TweetTopicSingle, TweetTopicXl
from pe_jax.data.builders.tweeteval import TweetEval, XlmTUmsab

__all__ = [
    "PeJaxBuilder", "Pawsx", "RetrievalSubsets", "StsbMultiMt", "Tatoeba", "TweetEval",
    "TweetTopicSingle", "TweetTopicXl", "XlmTUmsab",
]
