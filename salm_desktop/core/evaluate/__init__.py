"""Efficacy check: train fresh classifiers (the thief suite) on protected data, test them on clean data."""

from .arrays import medmnist_series, series_from_arrays
from .datasets import load_split
from .efficacy import ARCHS, build_attacker, classification_metrics, evaluate_efficacy, train_and_test
from .suite import evaluate_suite, format_suite
from .thieves import ThiefRecipe, default_suite, parse_thief, run_thief
from .verdict import decide, verdict_line

__all__ = ["ARCHS", "ThiefRecipe", "build_attacker", "classification_metrics", "decide", "default_suite", "evaluate_efficacy",
           "evaluate_suite", "format_suite", "load_split", "medmnist_series", "parse_thief", "run_thief",
           "series_from_arrays", "train_and_test", "verdict_line"]
