"""Derivation of fixed multi-task models and their export."""

from .derive import MultiTaskModel, derive

__all__ = ["MultiTaskModel", "derive"]
