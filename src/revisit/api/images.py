"""The header check of uploaded images lives in :mod:`revisit.vision.header` (the detect
stage applies it too, to every input); re-exported here for the API's routes."""

from revisit.vision.header import ImageError, image_size

__all__ = ["ImageError", "image_size"]
