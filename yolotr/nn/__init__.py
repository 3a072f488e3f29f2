"""yolotr.nn."""
