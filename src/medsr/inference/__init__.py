"""Inference: apply upscalers to MedImages (slice-wise, through-plane, with safeguards)."""

from medsr.inference.predictor import SCALES, load_upscaler, resolve_device, upscale

__all__ = ["SCALES", "load_upscaler", "resolve_device", "upscale"]
