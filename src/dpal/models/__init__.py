"""Models and access to their embeddings (the activations just before the logits)."""

from dpal.models.cnn import TFPrivacyCNN
from dpal.models.embedding import embeddings, logits_and_embeddings
from dpal.models.registry import MODELS, build_model

__all__ = ["MODELS", "TFPrivacyCNN", "build_model", "embeddings", "logits_and_embeddings"]
