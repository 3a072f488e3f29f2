"""yolotr.ops."""
