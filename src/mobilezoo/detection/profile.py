"""A detector's cost split into backbone / neck / head, counted by the same profiler as a classifier's.

:func:`profile_detector` profiles :class:`~mobilezoo.detection.export.DetectorNetwork` (the module the ONNX export
holds: a normalised, fixed-size batch in, raw head outputs out, no post-processing) with
:func:`mobilezoo.complexity.profile`, and sums its per-layer rows (which sum exactly to its totals) by module:

* **backbone**: the registered model's trunk (``backbone.body``);
* **neck**: FCOS's FPN (and its max-pool level), SSDLite's extra blocks, Light-Head R-CNN's large separable conv
  (the rest of the detector's ``backbone`` module);
* **head**: the FCOS / SSDLite head, Light-Head's RPN head; and, for Light-Head R-CNN, its RoI head (the FC and the
  Fast R-CNN predictor) for ``rois`` RoIs per image, profiled separately on the pooled (rois, 10, 7, 7) input.
  PSRoIAlign's bilinear sampling, the proposal decoding and NMS, and every other post-processing step are not
  counted (they are not in the network; their cost depends on the number of boxes, not on shapes alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from mobilezoo.complexity.profiler import profile
from mobilezoo.complexity.results import CONVENTIONS, LayerProfile, Profile
from mobilezoo.detection.export import DetectorNetwork, detector_kind

PARTS = ("backbone", "neck", "head")


@dataclass(frozen=True)
class PartProfile:
    """The summed per-layer rows of one part (or of all: ``name == "total"``); units as in :class:`Profile`."""

    name: str
    layers: int
    params: int
    madds: int
    other_ops: int
    mac: int
    mac_bytes: int
    output_bytes: int

    @property
    def flops(self) -> int:
        """2 x MAdds."""
        return 2 * self.madds

    @property
    def all_ops(self) -> int:
        return self.madds + self.other_ops

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layers,
            "params": self.params,
            "madds": self.madds,
            "madds_m": self.madds / 1e6,
            "flops_2x_madds": self.flops,
            "other_ops": self.other_ops,
            "all_ops": self.all_ops,
            "mac": self.mac,
            "mac_bytes": self.mac_bytes,
            "output_bytes": self.output_bytes,
        }


def _sum(name: str, rows: list[LayerProfile]) -> PartProfile:
    return PartProfile(
        name=name,
        layers=len(rows),
        params=sum(r.params for r in rows),
        madds=sum(r.madds for r in rows),
        other_ops=sum(r.other_ops for r in rows),
        mac=sum(r.mac for r in rows),
        mac_bytes=sum(r.mac_bytes for r in rows),
        output_bytes=sum(r.output_bytes for r in rows),
    )


def part_of(layer_name: str) -> str:
    """The part (:data:`PARTS`) a row of a :class:`DetectorNetwork` profile belongs to, by its module name."""
    if layer_name == "backbone.body" or layer_name.startswith("backbone.body."):
        return "backbone"
    if layer_name == "backbone" or layer_name.startswith("backbone."):
        return "neck"
    return "head"  # the head's modules and the network's own output assembly (a reshape of the RPN's outputs)


@dataclass(frozen=True)
class DetectorProfile:
    """A detector's cost by part. ``network`` is the profile of its :class:`DetectorNetwork`; ``roi_head`` that of
    Light-Head's RoI head for ``rois`` RoIs per image (None otherwise); ``parts`` sum their rows, ``total`` the parts.
    """

    detector: str
    backbone: str
    input_shape: tuple[int, int, int, int]
    parts: tuple[PartProfile, ...]
    network: Profile
    roi_head: Profile | None
    rois: int
    notes: tuple[str, ...]

    @property
    def total(self) -> PartProfile:
        p = self.parts
        return PartProfile(
            "total",
            sum(x.layers for x in p),
            sum(x.params for x in p),
            sum(x.madds for x in p),
            sum(x.other_ops for x in p),
            sum(x.mac for x in p),
            sum(x.mac_bytes for x in p),
            sum(x.output_bytes for x in p),
        )

    def part(self, name: str) -> PartProfile:
        """The part called ``name`` (one of :data:`PARTS`); ValueError otherwise."""
        for p in self.parts:
            if p.name == name:
                return p
        raise ValueError(f"unknown part {name!r}; expected one of {PARTS}")

    def to_dict(self, per_layer: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "detector": self.detector,
            "backbone": self.backbone,
            "input_shape": list(self.input_shape),
            "parts": {p.name: p.to_dict() for p in self.parts},
            "total": self.total.to_dict(),
            "peak_activation_bytes": self.network.peak_activation_bytes,
            "rois": self.rois,
            "notes": list(self.notes),
            "conventions": dict(CONVENTIONS),
        }
        if per_layer:
            out["layers"] = [{**r.to_dict(), "part": part_of(r.name)} for r in self.network.layers]
            if self.roi_head is not None:
                out["layers"] += [
                    {**r.to_dict(), "name": f"roi_heads.{r.name}".rstrip("."), "part": "head"}
                    for r in self.roi_head.layers
                ]
        return out


class _RoIHead(nn.Module):
    """Light-Head R-CNN's per-RoI head (FC + predictor) on pooled (R, ps_channels, k, k) features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.box_head = model.roi_heads.box_head
        self.box_predictor = model.roi_heads.box_predictor
        self.in_chans = int(model.mobilezoo["options"]["ps_channels"])
        self.model_name = "roi_heads"
        self.training = model.training  # the profiler restores this flag recursively: the detector's, not a default

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.box_predictor(self.box_head(x))


def _check_size(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 32:
        raise ValueError(f"{name} must be an integer >= 32 (px), got {value!r}")


def profile_detector(
    model: nn.Module,
    *,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    rois: int | None = None,
) -> DetectorProfile:
    """Profile a detector's network (backbone + neck + head, no post-processing) and split it by part.

    ``model``: built by :func:`~mobilezoo.detection.create_detector` (on the ``meta`` device too: counts depend on
    shapes only). ``height``/``width`` (px): the network's input, by default ``model.mobilezoo["image_size"]``
    square; SSDLite only runs at its fixed size. ``rois``: Light-Head R-CNN's RoIs per image for its RoI head (None:
    the model's test-time proposal count; 0 leaves the RoI head out); other detectors take None or 0.
    Raises ValueError for a model not built by ``create_detector`` or a bad size, batch or RoI count.
    """
    kind = detector_kind(model)
    size = int(model.mobilezoo["image_size"])
    h = size if height is None else height
    w = size if width is None else width
    _check_size("height", h)
    _check_size("width", w)
    if kind == "ssdlite" and (h, w) != (size, size):
        raise ValueError(f"ssdlite resizes every image to its fixed {size}x{size}: profile at that size, got {h}x{w}")
    notes = ["post-processing (box decoding, score threshold, NMS) is outside the network and not counted"]
    if kind == "light_head_rcnn":
        rois = int(model.rpn._post_nms_top_n["testing"]) if rois is None else rois
        if not isinstance(rois, int) or isinstance(rois, bool) or rois < 0:
            raise ValueError(f"rois must be an integer >= 0, got {rois!r}")
        notes.append(
            f"head includes the RoI head (FC + predictor) for {rois} RoIs per image; PSRoIAlign's sampling and "
            "the proposal NMS are not counted"
            if rois
            else "the RoI head (PSRoIAlign, FC, predictor; per RoI) is left out (rois=0)"
        )
    elif rois not in (None, 0):
        raise ValueError(f"rois is for light_head_rcnn's RoI head; {kind} has none, got rois={rois!r}")
    else:
        rois = 0
    net = DetectorNetwork(model)
    net.model_name = f"{kind}({model.mobilezoo['backbone']})"
    network = profile(net, resolution=(h, w), batch_size=batch_size)
    by_part: dict[str, list[LayerProfile]] = {p: [] for p in PARTS}
    for row in network.layers:
        by_part[part_of(row.name)].append(row)
    roi_prof = None
    if rois:
        k = int(model.roi_heads.box_roi_pool.output_size)
        roi_prof = profile(_RoIHead(model), resolution=(k, k), batch_size=batch_size * rois)
        by_part["head"] += list(roi_prof.layers)
    return DetectorProfile(
        detector=kind,
        backbone=str(model.mobilezoo["backbone"]),
        input_shape=network.input_shape,
        parts=tuple(_sum(p, by_part[p]) for p in PARTS),
        network=network,
        roi_head=roi_prof,
        rois=rois,
        notes=tuple(notes),
    )


__all__ = ["PARTS", "DetectorProfile", "PartProfile", "part_of", "profile_detector"]
