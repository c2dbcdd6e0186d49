"""Seeded expected outputs that pin every registered architecture.

A refactor that changes an architecture changes these logits, and ``tests/models/test_contract.py`` fails. After an
*intended* architecture change, regenerate them explicitly with ``make regen-expected`` and commit the JSON with a
message saying why.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import mobilezoo

EXPECTED_PATH = Path(__file__).with_name("expected_outputs.json")
NUM_CLASSES = 10
INPUT_SHAPE = (2, 3, 64, 64)


def seeded_logits(name: str) -> torch.Tensor:
    """Logits of ``name`` built with seed 0 (10 classes, eval mode) on a seed-1 normal input of INPUT_SHAPE."""
    torch.manual_seed(0)
    model = mobilezoo.create_model(name, num_classes=NUM_CLASSES).eval()
    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return model(x)


def main() -> None:
    torch.set_num_threads(1)
    expected = {name: seeded_logits(name).flatten().tolist() for name in mobilezoo.list_models()}
    EXPECTED_PATH.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(expected)} models' expected outputs to {EXPECTED_PATH}")


if __name__ == "__main__":
    main()
