"""How a checkpoint's images were prepared: what ``predict``, ``eval`` and ``export`` apply with public weights.

A :class:`Preprocessing` is the evaluation transform of one checkpoint: the shorter side resized to
``round(input_size / crop_pct)`` with ``interpolation``, a centre crop of ``input_size``, pixels scaled to [0, 1],
the channels put in ``channel_order``, then ``(x - mean) / std`` (mean and std in that order). ``create_model`` sets
it as ``model.preprocessing`` when it loads torchvision's, timm's or megvii's weights, and the model card lists it
for each checkpoint that loads.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

from mobilezoo.data import IMAGENET_MEAN, IMAGENET_STD

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Preprocessing:
    """One checkpoint's evaluation transform; ``source`` names the checkpoint (e.g. ``"timm:mobilenetv2_100.ra_in1k"``).

    Megvii's ShuffleNets read BGR pixels in 0-255 without normalisation: ``mean=(0, 0, 0)``, ``std=(1/255,) * 3`` and
    ``channel_order="BGR"`` here (the [0, 1] pixels divided by 1/255).
    """

    source: str
    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "RGB"
    num_classes: int = 1000

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} must have one value per channel")

    @property
    def resize(self) -> int:
        """The shorter side before the centre crop, in pixels."""
        return round(self.input_size / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"], out["resize"] = list(self.mean), list(self.std), self.resize
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict` (``resize`` is derived, so ignored)."""
        keys = {k: v for k, v in values.items() if k != "resize"}
        keys["mean"], keys["std"] = tuple(keys["mean"]), tuple(keys["std"])
        return cls(**keys)

    def transforms(self) -> Any:
        """The ``torchvision.transforms.v2`` pipeline: a PIL RGB image to the model's input tensor (C, size, size)."""
        from mobilezoo.data import Normalization, build_transforms

        return build_transforms(
            False,
            self.input_size,
            Normalization(self.mean, self.std),
            eval_crop_pct=self.crop_pct,
            interpolation=self.interpolation,
            channel_order=self.channel_order,
        )


MEGVII = Preprocessing(
    source="megvii",
    input_size=224,
    crop_pct=224 / 256,  # OpenCV's bilinear resize of the shorter side to 256, then the centre 224 (train.py)
    interpolation="bilinear",
    mean=(0.0, 0.0, 0.0),
    std=(1 / 255, 1 / 255, 1 / 255),
    channel_order="BGR",
)


def torchvision_preprocessing(enum_name: str, member: str = "DEFAULT") -> Preprocessing:
    """A torchvision checkpoint's :class:`Preprocessing`, from its weights enum (no download)."""
    from mobilezoo.weights.torchvision import torchvision_pretrained_info

    info = torchvision_pretrained_info(enum_name, member)
    crop, resize = info["crop"][0], info["resize"][0]
    return Preprocessing(
        source=f"torchvision:{info['weights'].rpartition('.')[2]}",
        input_size=crop,
        crop_pct=crop / resize,
        interpolation=info["interpolation"],
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
    )


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the order every ImageNet checkpoint here uses (torchvision's list)."""
    from torchvision.models import get_weight

    return tuple(get_weight("MobileNet_V2_Weights.IMAGENET1K_V1").meta["categories"])
