"""Exact Flax Linen versions of classic CNNs, behind one registry."""

from jaxcnn.models.config import ModelConfig
from jaxcnn.models.registry import create_model, list_models, model_options

__all__ = ["ModelConfig", "create_model", "list_models", "model_options"]
