"""yolotr.metrics."""
