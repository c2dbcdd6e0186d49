"""The official ShuffleNet V1/V2 checkpoints of megvii-model/ShuffleNet-Series: ``"megvii:<file>"``.

Their files (OneDrive/BaiduYun links in the repository's READMEs; no hub) hold ``{"state_dict": ...}`` saved from an
``nn.DataParallel`` model, so every key starts with ``module.``; they are read without running code
(``torch.load(weights_only=True)``), the prefix removed, and the state_dict mapped by the family's megvii key map. The
nets read BGR pixels in 0-255 without normalisation (:data:`~mobilezoo.weights.preprocessing.MEGVII`).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from mobilezoo.weights.files import find_state_dict, read_checkpoint


def parse(spec: str) -> Path:
    """The file of ``"megvii:<file>"``; raises ValueError when none is given."""
    body = spec.partition(":")[2]
    if not body:
        raise ValueError(f"weights={spec!r}: expected 'megvii:<file>', the path of an official ShuffleNet checkpoint")
    return Path(body).expanduser()


def read(path: Path) -> dict[str, Tensor]:
    """The checkpoint's state_dict with DataParallel's ``module.`` prefix removed (when every key has it)."""
    state = find_state_dict(read_checkpoint(path), f"megvii checkpoint {str(path)!r}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def family_of(state: dict[str, Tensor], markers: dict[str, str]) -> str | None:
    """The family whose marker module (``branch_main_1`` for V1, ``branch_main`` for V2) the keys hold, or None."""
    for family, marker in markers.items():
        if any(f".{marker}." in k for k in state):
            return family
    return None
