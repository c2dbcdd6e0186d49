"""mobilezoo: MobileNet V1/V2/V3, ShuffleNet V1/V2 and their reference nets, faithful to the papers."""

from mobilezoo.complexity import profile, textbook_tables
from mobilezoo.registry import create_model, list_models, model_card
from mobilezoo.selection import Budget, select
from mobilezoo.weights import load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "__version__",
    "create_model",
    "list_models",
    "load_weights",
    "model_card",
    "profile",
    "save_weights",
    "select",
    "textbook_tables",
]
