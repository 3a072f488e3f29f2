"""yolotr.data."""
