"""Ownership keys: prove after the fact that a model was trained on a keyed release (docs/ownership.md)."""
