"""Efficacy check: train a fresh classifier on protected data, test it on clean data."""

from .arrays import medmnist_series, series_from_arrays
from .datasets import load_split
from .efficacy import ARCHS, build_attacker, classification_metrics, evaluate_efficacy, train_and_test

__all__ = ["ARCHS", "build_attacker", "classification_metrics", "evaluate_efficacy", "load_split", "medmnist_series",
           "series_from_arrays", "train_and_test"]
