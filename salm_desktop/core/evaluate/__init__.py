"""Efficacy check: train a fresh classifier on protected data, test it on clean data."""

from .arrays import medmnist_series, series_from_arrays

__all__ = ["medmnist_series", "series_from_arrays"]
