"""yolotr."""
