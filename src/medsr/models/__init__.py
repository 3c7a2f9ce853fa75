"""Model zoo: every upscaler (classical interpolators and networks) behind one registry."""

from medsr.models.registry import create_model, get_model_class, list_models, register_model

__all__ = ["create_model", "get_model_class", "list_models", "register_model"]
