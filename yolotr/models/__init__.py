"""yolotr.models."""
