"""Detectors on mobilezoo backbones: thin wrappers over ``torchvision.models.detection``.

torchvision supplies the heads, losses, box coding, anchor/point matching, the resize-and-normalise transform and NMS;
this module only wires a :class:`~mobilezoo.detection.backbone.DetectionBackbone` into them:

* ``"fcos"``: FCOS (Tian et al., arXiv:1904.01355) with a small FPN (``fpn_channels``, default 64) on the stride >= 8
  maps plus one max-pool level, and ``FCOSHead(num_convs=head_convs)``; ``head="dw"`` makes the head's convs
  depthwise-separable (about 8x cheaper: at 40 MFLOPs-level backbones the full head dominates the cost). Learns from
  scratch in minutes: the default for training.
* ``"ssdlite"``: SSDLite (MobileNetV2 paper section 6.2; torchvision's ``ssdlite320_mobilenet_v3_large``): the
  backbone's two deepest maps (for MobileNetV2/V3 the stride-16 one is the expansion-conv tap), four extra blocks and
  ``SSDLiteHead``, at a fixed square input.
* ``"light_head_rcnn"``: Light-Head R-CNN (Li et al., arXiv:1711.07264), the ShuffleNet V2 paper's detector (its
  Table 7): an RPN on the second-deepest (stride-16) map; a large separable conv (k=15, 64 mid channels, 10 x 7 x 7 =
  490 out) on the deepest map; ``torchvision.ops.PSRoIAlign`` 7x7; one FC (2048) and torchvision's Fast R-CNN
  predictor. Random RoI sampling (256 per image, 25% positive) replaces the paper's OHEM, which torchvision lacks.

``num_classes`` counts object classes; labels are 1..num_classes everywhere (SSD and Faster R-CNN reserve 0 for the
background and are built with ``num_classes + 1``; FCOS has no background class and sees labels shifted to 0..K-1). Nothing is frozen: the backbones train from scratch.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from functools import partial
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, ps_roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mobilezoo.detection.backbone import DetectionBackbone

DETECTORS = ("fcos", "ssdlite", "light_head_rcnn")
FCOS_HEADS = ("full", "dw")
# per detector: its options and their defaults (create_detector rejects any other name)
OPTIONS: dict[str, dict[str, Any]] = {
    "fcos": {
        "fpn_channels": 64,
        "head_convs": 2,
        "head": "full",
        "score_thresh": 0.05,
        "nms_thresh": 0.6,
        "detections_per_img": 100,
        "topk_candidates": 1000,
    },
    "ssdlite": {
        "extra_channels": (512, 256, 256, 128),
        "min_ratio": 0.2,
        "max_ratio": 0.95,
        "score_thresh": 0.001,
        "nms_thresh": 0.55,
        "detections_per_img": 300,
        "topk_candidates": 300,
    },
    "light_head_rcnn": {
        "anchor_sizes": (32, 64, 128, 256, 512),
        "aspect_ratios": (0.5, 1.0, 2.0),
        "kernel": 15,
        "mid_channels": 64,
        "ps_channels": 10,
        "pool_size": 7,
        "fc_channels": 2048,
        "rpn_proposals": (300, 100),
        "rpn_pre_nms": (1200, 600),
        "roi_batch": 256,
        "score_thresh": 0.05,
        "nms_thresh": 0.5,
        "detections_per_img": 100,
    },
}


class BackboneWithFPN(nn.Module):
    """A :class:`DetectionBackbone` followed by torchvision's ``FeaturePyramidNetwork`` and a max-pool level.

    Output: OrderedDict of ``out_channels``-channel maps at ``strides`` (the backbone's, then twice the last).
    """

    def __init__(self, body: DetectionBackbone, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.strides = [*body.strides, 2 * body.strides[-1]]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


class SSDLiteFeatures(nn.Module):
    """The backbone's two deepest maps, then one torchvision SSDLite extra block (1x1, DW3x3 s2, 1x1) per
    ``extra_channels`` entry, each halving the resolution."""

    def __init__(self, body: DetectionBackbone, extra_channels: tuple[int, ...], norm_layer: Any) -> None:
        super().__init__()
        self.body = body
        chans = body.out_channels[-2:]
        extras = []
        for c in extra_channels:
            extras.append(_extra_block(chans[-1], c, norm_layer))
            chans.append(c)
        self.extra = nn.ModuleList(extras)
        self.out_channels = chans
        self.strides = [*body.strides[-2:], *(body.strides[-1] * 2 ** (i + 1) for i in range(len(extras)))]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = list(self.body(x).values())[-2:]
        for block in self.extra:
            maps.append(block(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class LargeSeparableConv(nn.Module):
    """Light-Head R-CNN's thin feature map: (k x 1 -> 1 x k) + (1 x k -> k x 1), summed, ReLU (paper Fig. 3)."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, kernel: int) -> None:
        super().__init__()
        p = kernel // 2
        self.col = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, (kernel, 1), padding=(p, 0)),
            nn.Conv2d(mid_chs, out_chs, (1, kernel), padding=(0, p)),
        )
        self.row = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, (1, kernel), padding=(0, p)),
            nn.Conv2d(mid_chs, out_chs, (kernel, 1), padding=(p, 0)),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.col(x) + self.row(x))


class LightHeadFeatures(nn.Module):
    """``{"rpn": second-deepest map, "thin": LargeSeparableConv(deepest map)}``; ``out_channels`` is the RPN map's."""

    def __init__(self, body: DetectionBackbone, kernel: int, mid_chs: int, thin_chs: int) -> None:
        super().__init__()
        if len(body.strides) < 2:
            raise ValueError(f"light_head_rcnn needs two feature maps of {body.model_name}, got strides {body.strides}")
        self.body = body
        self.thin = LargeSeparableConv(body.out_channels[-1], mid_chs, thin_chs, kernel)
        self.out_channels = body.out_channels[-2]
        self.strides = body.strides[-2:]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = list(self.body(x).values())
        return OrderedDict(rpn=maps[-2], thin=self.thin(maps[-1]))


class SingleMapRPN(RegionProposalNetwork):
    """torchvision's RPN on the ``"rpn"`` map only (its stock version proposes on every map it is given)."""

    def forward(self, images: Any, features: dict[str, Tensor], targets: Any = None) -> Any:
        return super().forward(images, {"rpn": features["rpn"]}, targets)


class PSRoIPooler(nn.Module):
    """Position-sensitive RoIAlign of the ``"thin"`` map, with the call signature ``RoIHeads`` expects of a pooler."""

    def __init__(self, output_size: int, spatial_scale: float, sampling_ratio: int = 2) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: Any) -> Tensor:
        return ps_roi_align(features["thin"], proposals, self.output_size, self.spatial_scale, self.sampling_ratio)


class FCOSDetector(FCOS):
    """torchvision's FCOS with labels 1..K outside: its sigmoid classifier has no background class, so it is built with
    K outputs and sees labels 0..K-1 (a K+1-th logit for label 0 would be scored, and emitted, as a class)."""

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        if targets is not None:
            targets = [{**t, "labels": t["labels"] - 1} for t in targets]
        out = super().forward(images, targets)
        if isinstance(out, list):  # detections (eval mode); a dict of losses in training
            out = [{**o, "labels": o["labels"] + 1} for o in out]
        return out


def _dw_convs(channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.GroupNorm(32, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.GroupNorm(32, channels),
            nn.ReLU(inplace=True),
        ]
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def _check_int(name: str, value: Any, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_prob(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _fcos(body: DetectionBackbone, n: int, common: dict[str, Any], o: dict[str, Any]) -> FCOS:
    _check_int("fpn_channels", o["fpn_channels"])
    if o["fpn_channels"] % 32:
        raise ValueError(
            f"fpn_channels must be a multiple of 32 (torchvision's FCOS head uses GroupNorm(32, C)), got {o['fpn_channels']!r}"
        )
    _check_int("head_convs", o["head_convs"], 0)
    if o["head"] not in FCOS_HEADS:
        raise ValueError(f"head must be one of {FCOS_HEADS}, got {o['head']!r}")
    neck = BackboneWithFPN(body, o["fpn_channels"])
    anchors = AnchorGenerator(tuple((s,) for s in neck.strides), ((1.0,),) * len(neck.strides))  # one point per cell
    head = FCOSHead(neck.out_channels, 1, n, num_convs=o["head_convs"])
    if o["head"] == "dw":
        head.classification_head.conv = _dw_convs(neck.out_channels, o["head_convs"])
        head.regression_head.conv = _dw_convs(neck.out_channels, o["head_convs"])
    return FCOSDetector(
        neck,
        n,
        anchor_generator=anchors,
        head=head,
        score_thresh=o["score_thresh"],
        nms_thresh=o["nms_thresh"],
        detections_per_img=o["detections_per_img"],
        topk_candidates=o["topk_candidates"],
        **common,
    )


def _ssdlite(body: DetectionBackbone, n: int, common: dict[str, Any], o: dict[str, Any], size: int) -> SSD:
    extra = tuple(o["extra_channels"])
    for c in extra:
        _check_int("extra_channels entries", c, 2)
    if not 0.0 < o["min_ratio"] < o["max_ratio"] <= 1.0:
        raise ValueError(
            f"min_ratio and max_ratio must satisfy 0 < min < max <= 1, got {o['min_ratio']!r}, {o['max_ratio']!r}"
        )
    if len(body.strides) < 2:
        raise ValueError(f"ssdlite needs two feature maps of {body.model_name}, got strides {body.strides}")
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # torchvision's SSDLite settings
    neck = SSDLiteFeatures(body, extra, norm)
    anchors = DefaultBoxGenerator([[2, 3]] * len(neck.out_channels), min_ratio=o["min_ratio"], max_ratio=o["max_ratio"])
    head = SSDLiteHead(neck.out_channels, anchors.num_anchors_per_location(), n + 1, norm)
    return SSD(
        neck,
        anchors,
        (size, size),
        n + 1,
        image_mean=common["image_mean"],
        image_std=common["image_std"],
        head=head,
        score_thresh=o["score_thresh"],
        nms_thresh=o["nms_thresh"],
        detections_per_img=o["detections_per_img"],
        topk_candidates=o["topk_candidates"],
    )


def _light_head(body: DetectionBackbone, n: int, common: dict[str, Any], o: dict[str, Any]) -> FasterRCNN:
    for key in ("kernel", "mid_channels", "ps_channels", "pool_size", "fc_channels", "roi_batch"):
        _check_int(key, o[key])
    if o["kernel"] % 2 == 0:
        raise ValueError(f"kernel must be odd (same-size padding), got {o['kernel']!r}")
    for key in ("rpn_proposals", "rpn_pre_nms"):
        if len(tuple(o[key])) != 2:
            raise ValueError(f"{key} is (train, test), got {o[key]!r}")
        for v in o[key]:
            _check_int(f"{key} entries", v)
    sizes, ratios = tuple(o["anchor_sizes"]), tuple(float(r) for r in o["aspect_ratios"])
    if not sizes or not ratios or any(s <= 0 for s in sizes) or any(r <= 0 for r in ratios):
        raise ValueError(f"anchor_sizes and aspect_ratios must be non-empty and positive, got {sizes!r}, {ratios!r}")
    k = o["pool_size"]
    neck = LightHeadFeatures(body, o["kernel"], o["mid_channels"], o["ps_channels"] * k * k)
    anchors = AnchorGenerator((sizes,), (ratios,))
    rpn_head = RPNHead(neck.out_channels, anchors.num_anchors_per_location()[0])
    box_head = nn.Sequential(nn.Flatten(), nn.Linear(o["ps_channels"] * k * k, o["fc_channels"]), nn.ReLU(inplace=True))
    model = FasterRCNN(
        neck,
        None,  # the class count is the predictor's
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_roi_pool=MultiScaleRoIAlign(["thin"], k, 2),  # replaced below (FasterRCNN type-checks this argument)
        box_head=box_head,
        box_predictor=FastRCNNPredictor(o["fc_channels"], n + 1),
        box_score_thresh=o["score_thresh"],
        box_nms_thresh=o["nms_thresh"],
        box_detections_per_img=o["detections_per_img"],
        box_batch_size_per_image=o["roi_batch"],
        **common,
    )
    model.roi_heads.box_roi_pool = PSRoIPooler(k, 1.0 / neck.strides[-1])
    pre, post = tuple(o["rpn_pre_nms"]), tuple(o["rpn_proposals"])
    model.rpn = SingleMapRPN(
        anchors,
        rpn_head,
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n={"training": pre[0], "testing": pre[1]},
        post_nms_top_n={"training": post[0], "testing": post[1]},
        nms_thresh=0.7,
    )
    return model


def create_detector(
    kind: str = "fcos",
    backbone: str = "shufflenet_v2_x0_5",
    *,
    num_classes: int,
    in_chans: int = 3,
    image_size: int = 320,
    max_size: int | None = None,
    image_mean: tuple[float, ...] | None = None,
    image_std: tuple[float, ...] | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> nn.Module:
    """Build a detector (one of :data:`DETECTORS`) on a registered model as its backbone, randomly initialised.

    ``num_classes`` object classes (labels 1..num_classes). Images (a list of (in_chans, H, W) float tensors in [0, 1])
    are normalised with ``image_mean``/``image_std`` (default: ImageNet's, their average for 1 channel) and resized by
    torchvision's transform: short side to ``image_size`` and long side at most ``max_size`` (default
    ``image_size * 5 // 3``) for FCOS and Light-Head, to exactly ``image_size`` x ``image_size`` for SSDLite.
    ``backbone_kwargs`` go to :class:`DetectionBackbone` (``out_indices``, ``expansion_tap``, ``width_mult``,
    ``reduced_tail``, ...). ``options`` are the detector's (:data:`OPTIONS` lists them with their defaults).

    The model is torchvision's: in training mode ``model(images, targets)`` returns a dict of losses (targets: dicts of
    ``boxes`` (K, 4) xyxy pixels and ``labels`` (K,) int64); in eval mode ``model(images)`` returns per image
    ``boxes``, ``scores`` and ``labels``. ``model.mobilezoo`` holds what it was built from. Raises ``ValueError`` for an
    unknown detector, backbone or option, or a bad value (naming it).
    """
    from mobilezoo.data import default_normalization
    from mobilezoo.registry import model_card

    if kind not in DETECTORS:
        close = difflib.get_close_matches(str(kind), DETECTORS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown detector {kind!r}; expected one of {DETECTORS}{hint}")
    _check_int("num_classes", num_classes)
    _check_int("in_chans", in_chans)
    _check_int("image_size", image_size, 32)
    if max_size is not None:
        _check_int("max_size", max_size, image_size)
    unknown = sorted(set(options) - set(OPTIONS[kind]))
    if unknown:
        raise ValueError(f"{kind} takes no option {unknown[0]!r}; its options are {', '.join(OPTIONS[kind])}")
    opts = {**OPTIONS[kind], **options}
    for key in ("score_thresh", "nms_thresh"):
        _check_prob(key, opts[key])
    _check_int("detections_per_img", opts["detections_per_img"])
    norm = default_normalization(in_chans, builtin=False)
    mean = tuple(image_mean) if image_mean is not None else norm.mean
    std = tuple(image_std) if image_std is not None else norm.std
    if len(mean) != in_chans or len(std) != in_chans or any(s <= 0 for s in std):
        raise ValueError(f"image_mean/image_std need {in_chans} values (std > 0), got {mean!r}, {std!r}")
    bkw = dict(backbone_kwargs or {})
    if "in_chans" in bkw:
        raise ValueError("pass in_chans to create_detector, not in backbone_kwargs")
    model_card(backbone)  # an unknown name fails here with the registry's suggestions
    if kind == "ssdlite" and "expansion_tap" not in bkw:
        bkw["expansion_tap"] = model_card(backbone).family in ("MobileNetV2", "MobileNetV3")
    body = DetectionBackbone(backbone, in_chans=in_chans, **bkw)
    common = {
        "min_size": image_size,
        "max_size": max_size or image_size * 5 // 3,
        "image_mean": list(mean),
        "image_std": list(std),
    }
    if kind == "fcos":
        model = _fcos(body, num_classes, common, opts)
    elif kind == "ssdlite":
        model = _ssdlite(body, num_classes, common, opts, image_size)
    else:
        model = _light_head(body, num_classes, common, opts)
    model.mobilezoo = {  # type: ignore[assignment]
        "detector": kind,
        "backbone": backbone,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "image_size": image_size,
        "max_size": common["max_size"],
        "image_mean": list(mean),
        "image_std": list(std),
        "backbone_kwargs": bkw,
        "options": opts,
        "backbone_strides": list(body.strides),
        "backbone_channels": list(body.out_channels),
    }
    return model


__all__ = [
    "DETECTORS",
    "OPTIONS",
    "BackboneWithFPN",
    "FCOSDetector",
    "LargeSeparableConv",
    "LightHeadFeatures",
    "PSRoIPooler",
    "SSDLiteFeatures",
    "SingleMapRPN",
    "create_detector",
]
