"""yolotr.engine."""
