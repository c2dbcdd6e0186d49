"""Training and evaluation: typed configs and named recipes, the training engine, checkpoints, DDP, evaluation.

``train(TrainConfig(model="mobilenet_v3_small", data="builtin", recipe="modern", out="runs/x"))`` trains; the same
call runs data-parallel under ``torchrun``. ``evaluate_weights`` and ``predict`` use the weights a run writes.
"""

from mobilezoo.train.config import TrainConfig, resolve_config
from mobilezoo.train.config_io import load_config, resume_config
from mobilezoo.train.engine import train
from mobilezoo.train.evaluate import EvalResult, PredictResult, evaluate, evaluate_weights, predict, recalibrate_bn
from mobilezoo.train.guards import TrainingDivergedError
from mobilezoo.train.optim import RMSpropTF
from mobilezoo.train.recipes import MODERN, PAPER, Recipe, get_recipe
from mobilezoo.train.results import ProgressEvent, TrainResult

__all__ = [
    "MODERN",
    "PAPER",
    "EvalResult",
    "PredictResult",
    "ProgressEvent",
    "RMSpropTF",
    "Recipe",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "evaluate",
    "evaluate_weights",
    "get_recipe",
    "load_config",
    "predict",
    "recalibrate_bn",
    "resolve_config",
    "resume_config",
    "train",
]
