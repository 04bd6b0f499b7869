"""The text threat channel: data, models, attacks, defences and evaluation for text.

Import from here; the submodules are an implementation detail. Loading this package pulls in
torch but nothing heavier.
"""

from __future__ import annotations

from bastion.text.attack_base import TextAttack, TextAttackResult
from bastion.text.candidates import (
    EmbeddingNeighbours,
    SynonymLexicon,
    TypoNeighbours,
    UnionCandidates,
    stop_words,
)
from bastion.text.char_attacks import DeepWordBug, HomoglyphAttack, InvisibleCharAttack, typo
from bastion.text.classifier import TextClassifier
from bastion.text.config import TextConfig, parse_text_config
from bastion.text.evaluation import attack_metrics, clean_accuracy
from bastion.text.experiment import run_text_experiment
from bastion.text.io import load_text_model, save_text_model
from bastion.text.loaders import (
    TextDataset,
    TextSplit,
    fingerprint_texts,
    load_movie_review,
    load_sms_spam,
    load_text_dataset,
    read_movie_review,
    read_sms_spam,
    split_texts,
)
from bastion.text.models import (
    BiLSTM,
    NGramBag,
    TextModel,
    TextModelSpec,
    WordCNN,
    build_text_model,
)
from bastion.text.sanitize import Sanitizer, sanitize
from bastion.text.smoothing import (
    SmoothedTextClassifier,
    SmoothedTransformerClassifier,
    TokenNoise,
    smooth_classifier,
    text_seed,
)
from bastion.text.surrogate import SurrogateAttack
from bastion.text.synonym_encoding import SynonymCodes, synonym_codes
from bastion.text.training import (
    A2TAugmenter,
    SubstitutionTable,
    TextTrainSettings,
    accuracy_of,
    train_text_model,
)
from bastion.text.vocab import PAD_ID, UNK_ID, Vocabulary, tokenize
from bastion.text.word_attacks import AttackChain, WordSubstitution

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "A2TAugmenter",
    "AttackChain",
    "BiLSTM",
    "DeepWordBug",
    "EmbeddingNeighbours",
    "HomoglyphAttack",
    "InvisibleCharAttack",
    "NGramBag",
    "Sanitizer",
    "SmoothedTextClassifier",
    "SmoothedTransformerClassifier",
    "SubstitutionTable",
    "SurrogateAttack",
    "SynonymCodes",
    "SynonymLexicon",
    "TextAttack",
    "TextAttackResult",
    "TextClassifier",
    "TextConfig",
    "TextDataset",
    "TextModel",
    "TextModelSpec",
    "TextSplit",
    "TextTrainSettings",
    "TokenNoise",
    "TypoNeighbours",
    "UnionCandidates",
    "Vocabulary",
    "WordCNN",
    "WordSubstitution",
    "accuracy_of",
    "attack_metrics",
    "build_text_model",
    "clean_accuracy",
    "fingerprint_texts",
    "load_movie_review",
    "load_sms_spam",
    "load_text_dataset",
    "load_text_model",
    "parse_text_config",
    "read_movie_review",
    "read_sms_spam",
    "run_text_experiment",
    "sanitize",
    "save_text_model",
    "smooth_classifier",
    "split_texts",
    "stop_words",
    "synonym_codes",
    "text_seed",
    "tokenize",
    "train_text_model",
    "typo",
]
