"""Detectors to ONNX: backbone + neck + head only, post-processing (box decoding, thresholds, NMS) outside the graph.

torchvision's detectors do not export whole to ONNX Runtime (pytorch/vision#4623, #9462): the resize transform, the
anchor generation and the per-image NMS are data-dependent Python. So :func:`export_detector_onnx` exports
:class:`DetectorNetwork`, the part that is pure tensor work and holds nearly all the cost: it takes the
already-resized, already-normalised batch (N, C, H, W) and returns the head's raw outputs concatenated over the
levels, exactly what torchvision's head hands to its post-processing:

* FCOS: ``cls_logits`` (N, A, K), ``bbox_regression`` (N, A, 4), ``bbox_ctrness`` (N, A, 1);
* SSDLite: ``bbox_regression`` (N, A, 4), ``cls_logits`` (N, A, K + 1) (index 0 is the background);
* Light-Head R-CNN: its stage 1 only, ``rpn_objectness`` (N, A, 1), ``rpn_bbox_deltas`` (N, A, 4) and
  ``thin_features`` (N, 10 * 7 * 7, h, w), the large separable conv's thin map. The proposal NMS sits between the
  two stages, and the second stage's position-sensitive RoIAlign has no ONNX operator (torchvision registers ONNX
  symbolics for ``roi_align`` and ``nms``, not ``ps_roi_align``), so proposals and the RoI head (PSRoIAlign, one FC,
  the predictor: a small share of the cost) run outside the graph, in PyTorch. The backbone, the large separable conv
  and the RPN head, nearly all the MAdds, are in the file.

A JSON sidecar next to the ``.onnx`` file (same name, ``.json``) records what a user needs without our code: the
build config, the input size and normalisation, the output names and shapes, the anchors per level and feature map
sizes, and the post-processing settings. :class:`OnnxDetector` runs the file in ONNX Runtime and applies the torch
model's own torchvision post-processing (its anchor generator, ``postprocess_detections`` or RPN + RoI heads, and
``transform.postprocess``), so it returns what ``model(images)`` returns.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers

from mobilezoo.deploy._common import output_path
from mobilezoo.deploy.onnx_export import DEFAULT_OPSET, INPUT_NAME, ParityError, check_opset, onnx_parity
from mobilezoo.deploy.sessions import onnx_session
from mobilezoo.detection.detectors import DETECTORS, FCOSDetector, _check_int

OUTPUTS: dict[str, tuple[str, ...]] = {
    "fcos": ("cls_logits", "bbox_regression", "bbox_ctrness"),
    "ssdlite": ("bbox_regression", "cls_logits"),
    "light_head_rcnn": ("rpn_objectness", "rpn_bbox_deltas", "thin_features"),
}
SIDECAR_FORMAT = "mobilezoo-detector-onnx"


def detector_kind(model: Any) -> str:
    """The detector kind of a model built by :func:`~mobilezoo.detection.create_detector`; ValueError for anything
    else (no ``mobilezoo`` build config naming one of :data:`~mobilezoo.detection.DETECTORS`)."""
    info = getattr(model, "mobilezoo", None)
    kind = info.get("detector") if isinstance(info, dict) else None
    if not isinstance(model, nn.Module) or kind not in DETECTORS:
        raise ValueError(
            f"expected a detector built by mobilezoo.detection.create_detector (with its .mobilezoo config), got "
            f"{type(model).__name__}"
        )
    return kind


class DetectorNetwork(nn.Module):
    """A detector's backbone + neck + head as one module: (N, C, H, W) normalised batch -> tuple of raw head outputs
    (names in :data:`OUTPUTS`, shapes in the module docstring). Shares the detector's modules (no copy).

    Submodules: ``backbone`` (the detector's ``backbone``: trunk ``backbone.body`` and neck) and ``head`` (FCOS/SSD
    head, or Light-Head's RPN head).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.kind = detector_kind(model)
        self.backbone = model.backbone
        self.head = model.rpn.head if self.kind == "light_head_rcnn" else model.head
        self.in_chans = int(model.mobilezoo["in_chans"])
        self.min_input_size = getattr(model.backbone.body, "min_input_size", 1)
        # the detector's flag (not recursive): a caller that restores this module's mode restores the detector's
        self.training = model.training

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        features = self.backbone(x)
        if self.kind == "light_head_rcnn":
            objectness, deltas = self.head([features["rpn"]])
            objectness, deltas = concat_box_prediction_layers(objectness, deltas)  # (N*A, 1), (N*A, 4)
            n = x.shape[0]
            return objectness.reshape(n, -1, 1), deltas.reshape(n, -1, 4), features["thin"]
        out = self.head(list(features.values()))
        return tuple(out[name] for name in OUTPUTS[self.kind])


def _level_shapes(net: DetectorNetwork, x: Tensor) -> tuple[list[Tensor], list[tuple[int, int]]]:
    """The network's outputs for ``x`` and the (height, width) of the maps the anchors are laid on: FCOS's FPN levels,
    SSDLite's six maps, Light-Head's RPN map."""
    seen: list[tuple[int, int]] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        maps = [out["rpn"]] if net.kind == "light_head_rcnn" else list(out.values())
        seen.extend((int(m.shape[-2]), int(m.shape[-1])) for m in maps)

    handle = net.backbone.register_forward_hook(hook)
    try:
        with torch.no_grad():
            outs = list(net(x))
    finally:
        handle.remove()
    return outs, seen


def _anchors_per_location(model: nn.Module, kind: str) -> list[int]:
    if kind == "light_head_rcnn":
        return list(model.rpn.anchor_generator.num_anchors_per_location())
    return list(model.anchor_generator.num_anchors_per_location())


def _check_size(model: nn.Module, kind: str, height: int | None, width: int | None) -> tuple[int, int]:
    size = int(model.mobilezoo["image_size"])
    h = size if height is None else height
    w = size if width is None else width
    for name, v in (("height", h), ("width", w)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 32:
            raise ValueError(f"{name} must be an integer >= 32 (px), got {v!r}")
    if kind == "ssdlite":
        if (h, w) != (size, size):
            raise ValueError(
                f"ssdlite resizes every image to its fixed {size}x{size}: export at that size, got {h}x{w}"
            )
        return h, w
    div = int(model.transform.size_divisible)
    for name, v in (("height", h), ("width", w)):
        if v % div:
            raise ValueError(
                f"{name} {v} is not a multiple of {div} ({kind}'s transform pads images to multiples of {div}); "
                f"use {-(-v // div) * div}"
            )
    return h, w


@dataclass(frozen=True)
class DetectorExport:
    """An exported detector network: file, input and outputs, the sidecar, and the ONNX Runtime parity check
    (``max_abs_diff`` over every checked batch size; None when unchecked)."""

    path: Path
    sidecar: Path
    detector: str
    input_name: str
    input_shape: tuple[int | str, int, int, int]  # ("batch" or N, C, H, W)
    output_names: tuple[str, ...]
    opset: int
    max_abs_diff: float | None
    check_batches: tuple[int, ...]
    export_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sidecar": str(self.sidecar),
            "detector": self.detector,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "output_names": list(self.output_names),
            "opset": self.opset,
            "max_abs_diff": self.max_abs_diff,
            "check_batches": list(self.check_batches),
            "export_seconds": round(self.export_seconds, 3),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _postprocess_settings(model: nn.Module, kind: str) -> dict[str, Any]:
    if kind == "fcos":
        gen = model.anchor_generator
        return {
            "scores": "sqrt(sigmoid(cls_logits) * sigmoid(bbox_ctrness)); labels are class index + 1",
            "anchors": "per level, one point per cell: center (x * stride, y * stride) for cell (y, x) in row-major "
            "order, size = the level's anchor size (torchvision AnchorGenerator)",
            "anchor_sizes": [list(s) for s in gen.sizes],
            "box_coding": "torchvision BoxLinearCoder(normalize_by_size=True): box = center -/+ bbox_regression * "
            "anchor size, (x1, y1, x2, y2)",
            "score_thresh": model.score_thresh,
            "nms_thresh": model.nms_thresh,
            "detections_per_img": model.detections_per_img,
            "topk_candidates": model.topk_candidates,
            "nms": "per class (batched_nms), after keeping topk_candidates per level above score_thresh",
        }
    if kind == "ssdlite":
        gen = model.anchor_generator
        return {
            "scores": "softmax(cls_logits) over K + 1 classes; index 0 is the background, labels are the index",
            "anchors": "torchvision DefaultBoxGenerator (SSD default boxes), cx/cy/w/h relative to the input size",
            "aspect_ratios": [list(a) for a in gen.aspect_ratios],
            "scales": list(gen.scales),
            "clip": gen.clip,
            "box_coding": f"torchvision BoxCoder(weights={list(model.box_coder.weights)})",
            "score_thresh": model.score_thresh,
            "nms_thresh": model.nms_thresh,
            "detections_per_img": model.detections_per_img,
            "topk_candidates": model.topk_candidates,
            "nms": "per class (batched_nms)",
        }
    rpn, heads = model.rpn, model.roi_heads
    return {
        "stage_2": "outside this graph and not exportable to ONNX (PSRoIAlign has no ONNX operator): proposals from "
        "the RPN outputs (decode, top-n per image, NMS), PSRoIAlign of thin_features, the FC and predictor in PyTorch",
        "anchors": "torchvision AnchorGenerator on the rpn level",
        "anchor_sizes": [list(s) for s in rpn.anchor_generator.sizes],
        "aspect_ratios": [list(a) for a in rpn.anchor_generator.aspect_ratios],
        "rpn_box_coding": f"torchvision BoxCoder(weights={list(rpn.box_coder.weights)})",
        "rpn_pre_nms_top_n": rpn._pre_nms_top_n["testing"],
        "rpn_post_nms_top_n": rpn._post_nms_top_n["testing"],
        "rpn_nms_thresh": rpn.nms_thresh,
        "score_thresh": heads.score_thresh,
        "nms_thresh": heads.nms_thresh,
        "detections_per_img": heads.detections_per_img,
        "thin_map_stride": int(model.backbone.strides[-1]),
        "ps_roi_pool_size": int(model.roi_heads.box_roi_pool.output_size),
    }


def _sidecar(
    model: nn.Module,
    kind: str,
    hw: tuple[int, int],
    shape: tuple,
    names: tuple[str, ...],
    outs: list[Tensor],
    maps: list[tuple[int, int]],
    path: Path,
    opset: int,
    diff: float | None,
) -> dict[str, Any]:
    info = model.mobilezoo
    per_loc = _anchors_per_location(model, kind)
    transform = model.transform
    resize = (
        f"every image to exactly {hw[0]}x{hw[1]} (bilinear)"
        if kind == "ssdlite"
        else f"short side to {info['image_size']}, long side at most {info['max_size']} (bilinear, aspect kept), "
        f"then zero-padded (bottom/right) to {hw[0]}x{hw[1]}"
    )
    declared = model.backbone.strides
    strides = [declared[0]] if kind == "light_head_rcnn" else list(declared)  # Light-Head's anchors: the RPN map
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "onnx": path.name,
        "detector": kind,
        "config": _jsonable(info),
        "opset": opset,
        "max_abs_diff": diff,
        "input": {
            "name": INPUT_NAME,
            "shape": list(shape),
            "dtype": "float32",
            "layout": "NCHW",
            "height": hw[0],
            "width": hw[1],
            "mean": list(transform.image_mean),
            "std": list(transform.image_std),
            "normalisation": "x = (image - mean) / std per channel, image values in [0, 1]",
            "resize": resize,
        },
        "outputs": [
            {"name": n, "shape": ["batch" if isinstance(shape[0], str) else shape[0], *o.shape[1:]]}
            for n, o in zip(names, outs)
        ],
        "levels": [
            {"height": m[0], "width": m[1], "stride": s, "anchors_per_location": a, "num_anchors": m[0] * m[1] * a}
            for m, s, a in zip(maps, strides, per_loc)
        ],
        "num_anchors": sum(m[0] * m[1] * a for m, a in zip(maps, per_loc)),
        "anchor_order": "level by level; within a level row-major cells, anchors of a cell consecutive",
        "postprocess": _postprocess_settings(model, kind),
    }


def export_detector_onnx(
    model: nn.Module,
    path: str | PathLike,
    *,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-5,
) -> DetectorExport:
    """Export a detector's :class:`DetectorNetwork` (no post-processing) to ONNX, with a JSON sidecar, and check it.

    ``model``: built by :func:`~mobilezoo.detection.create_detector`. ``height``/``width`` (px): the input size, by
    default ``model.mobilezoo["image_size"]`` square; FCOS and Light-Head need multiples of 32 (their transform pads
    to that), SSDLite exactly its fixed size. The batch is symbolic (``batch``) with ``dynamic_batch``, else fixed at
    ``batch_size``; the graph is traced at ``batch_size``. ``opset``: 7..20 (TorchScript-based exporter).
    With ``check``, ONNX Runtime's outputs are compared with PyTorch's on a seeded random input at ``batch_size``, and
    with ``dynamic_batch`` also at ``batch_size + 1``; above ``atol + rtol * max|output|`` it raises
    :class:`~mobilezoo.deploy.ParityError`. The sidecar is ``path`` with the suffix ``.json``.
    Raises ValueError for a model not built by ``create_detector``, a bad size, batch or opset.
    """
    kind = detector_kind(model)
    check_opset(opset)
    _check_int("batch_size", batch_size)
    hw = _check_size(model, kind, height, width)
    path = output_path(path, (".onnx",))
    sidecar = path.with_suffix(".json")
    names = OUTPUTS[kind]
    net = DetectorNetwork(model)
    was_training = model.training
    model.eval()
    net.eval()  # the exporter restores the exported module's mode, recursively: it must be eval's
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, net.in_chans, *hw, generator=gen)
        outs, maps = _level_shapes(net, x)
        axes: dict[str, dict[int, str]] = {}
        if dynamic_batch:
            axes = {name: {0: "batch"} for name in (INPUT_NAME, *names)}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings from shape checks, the exporter's deprecation notice
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(names),
                dynamic_axes=axes or None,
                do_constant_folding=True,
            )
        seconds = time.perf_counter() - start
        diff, batches = None, ()
        if check:
            batches = (batch_size, batch_size + 1) if dynamic_batch else (batch_size,)
            diffs = []
            for b in batches:
                xc = torch.randn(b, net.in_chans, *hw, generator=torch.Generator().manual_seed(1))
                d = onnx_parity(path, net, xc)
                with torch.inference_mode():
                    scale = max(float(t.abs().max()) for t in net(xc))
                if not d <= atol + rtol * scale:
                    raise ParityError(
                        f"ONNX Runtime's output differs from PyTorch's by {d:.3g} (> {atol:g} + {rtol:g} x "
                        f"{scale:.3g}) for {str(path)!r} at batch {b}"
                    )
                diffs.append(d)
            diff = max(diffs)
    finally:
        model.train(was_training)
    shape = ("batch" if dynamic_batch else batch_size, net.in_chans, *hw)
    meta = _sidecar(model, kind, hw, shape, names, outs, maps, path, opset, diff)
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return DetectorExport(
        path=path,
        sidecar=sidecar,
        detector=kind,
        input_name=INPUT_NAME,
        input_shape=shape,  # type: ignore[arg-type]
        output_names=names,
        opset=opset,
        max_abs_diff=diff,
        check_batches=batches,
        export_seconds=seconds,
    )


def read_sidecar(path: str | PathLike) -> dict[str, Any]:
    """The JSON sidecar of an exported detector (``path``: the ``.onnx`` file or the ``.json`` itself).

    Raises FileNotFoundError when it is missing and ValueError when it is not one :func:`export_detector_onnx` wrote.
    """
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"detector sidecar {str(sidecar)!r} does not exist (export_detector_onnx writes it)")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(sidecar)!r} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{str(sidecar)!r} is not a mobilezoo detector sidecar (format {SIDECAR_FORMAT!r})")
    return meta


class OnnxDetector:
    """An exported detector run in ONNX Runtime, with the torch model's own torchvision pre- and post-processing.

    ``model`` is the detector the file was exported from (its transform, anchor generator, box coder, NMS settings
    and, for Light-Head R-CNN, RPN proposal filtering and RoI head run in PyTorch; its backbone, neck and head are not
    run). ``path`` is the ``.onnx`` file; its sidecar must exist and match the model's build config (ValueError
    otherwise). ``detector(images)`` takes what ``model(images)`` takes, a list of (C, H, W) float tensors in [0, 1],
    and returns per image ``boxes`` (K, 4) xyxy in the image's pixels, ``scores`` (K,) and ``labels`` (K,) int64:
    the eager model's detections, to ONNX Runtime's rounding. An image whose resized size exceeds the exported input
    size raises ValueError (smaller ones are zero-padded, as torchvision pads a batch to its largest image).
    """

    def __init__(self, model: nn.Module, path: str | PathLike, *, threads: int | None = None) -> None:
        self.kind = detector_kind(model)
        self.meta = read_sidecar(path)
        if self.meta["detector"] != self.kind or self.meta["config"] != _jsonable(model.mobilezoo):
            raise ValueError(
                f"{str(path)!r} was exported from a {self.meta['detector']} built differently from this "
                f"{self.kind} (their mobilezoo configs differ): pass the model it was exported from"
            )
        self.model = model
        self.path = Path(path)
        self.session = onnx_session(self.path, threads)
        self.height = int(self.meta["input"]["height"])
        self.width = int(self.meta["input"]["width"])
        self.batch = self.meta["input"]["shape"][0]
        self._maps = [(lvl["height"], lvl["width"]) for lvl in self.meta["levels"]]

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return self._detect(images)
        finally:
            model.train(was_training)

    def _detect(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        model = self.model
        if not isinstance(images, (list, tuple)) or not all(isinstance(i, Tensor) and i.dim() == 3 for i in images):
            raise ValueError("images must be a list of (C, H, W) tensors, as model(images) takes")
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        image_list, _ = model.transform(list(images))
        t = image_list.tensors
        h, w = t.shape[-2:]
        if h > self.height or w > self.width:
            raise ValueError(
                f"the images resize to {h}x{w}, larger than the exported {self.height}x{self.width}: export at a "
                "larger height/width"
            )
        if not isinstance(self.batch, str) and len(images) != self.batch:
            raise ValueError(f"{str(self.path)!r} has a fixed batch of {self.batch}, got {len(images)} images")
        t = F.pad(t, (0, self.width - w, 0, self.height - h))  # zeros, bottom/right: torchvision's batch padding
        padded = ImageList(t, image_list.image_sizes)
        outs = self.session.run(None, {INPUT_NAME: t.numpy()})
        outs = [torch.from_numpy(o) for o in outs]
        maps = [torch.empty(len(images), 0, mh, mw) for mh, mw in self._maps]  # shapes only, for the anchors
        sizes = image_list.image_sizes
        if self.kind == "light_head_rcnn":
            objectness, deltas, thin = outs
            rpn = model.rpn
            anchors = rpn.anchor_generator(padded, maps)
            per_level = [lvl["num_anchors"] for lvl in self.meta["levels"]]
            proposals = rpn.box_coder.decode(deltas.reshape(-1, 4), anchors).view(len(images), -1, 4)
            boxes, _ = rpn.filter_proposals(proposals, objectness.reshape(-1, 1), sizes, per_level)
            detections, _ = model.roi_heads({"thin": thin}, boxes, sizes)
        else:
            head = dict(zip(OUTPUTS[self.kind], outs))
            anchors = model.anchor_generator(padded, maps)
            if self.kind == "fcos":
                per_level = [lvl["num_anchors"] for lvl in self.meta["levels"]]
                split = {k: list(v.split(per_level, dim=1)) for k, v in head.items()}
                detections = model.postprocess_detections(split, [list(a.split(per_level)) for a in anchors], sizes)
            else:
                detections = model.postprocess_detections(head, anchors, sizes)
        detections = model.transform.postprocess(detections, sizes, original_sizes)
        if isinstance(model, FCOSDetector):  # its labels are 1..K outside (see FCOSDetector)
            detections = [{**d, "labels": d["labels"] + 1} for d in detections]
        return detections


__all__ = ["OUTPUTS", "DetectorExport", "DetectorNetwork", "OnnxDetector", "export_detector_onnx", "read_sidecar"]
