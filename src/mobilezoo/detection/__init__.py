"""Object detection on the zoo's backbones (the ShuffleNet V2 paper's Table 7, the textbook's Table 5-13).

``create_detector("fcos", backbone="shufflenet_v2_x0_5", num_classes=10, in_chans=1, image_size=128)`` builds a
torchvision detector on any registered model (:mod:`.detectors`, :mod:`.backbone`); :class:`DigitCanvases` is a
built-in deterministic detection set and :class:`CocoFolder` reads a user's COCO folder (:mod:`.data`); :func:`coco_map`
scores boxes with pycocotools' COCOeval (:mod:`.metrics`); :func:`train_detector` trains and scores (:mod:`.train`).
"""

from mobilezoo.detection.backbone import DetectionBackbone
from mobilezoo.detection.data import CanvasConfig, CocoFolder, DigitCanvases, export_coco
from mobilezoo.detection.detectors import DETECTORS, OPTIONS, create_detector
from mobilezoo.detection.export import DetectorExport, DetectorNetwork, OnnxDetector, export_detector_onnx
from mobilezoo.detection.metrics import CocoMetrics, coco_map
from mobilezoo.detection.profile import DetectorProfile, PartProfile, profile_detector
from mobilezoo.detection.train import (
    DetectionTrainConfig,
    DetectionTrainResult,
    evaluate_detector,
    train_detector,
)

__all__ = [
    "DETECTORS",
    "OPTIONS",
    "CanvasConfig",
    "CocoFolder",
    "CocoMetrics",
    "DetectionBackbone",
    "DetectionTrainConfig",
    "DetectionTrainResult",
    "DetectorExport",
    "DetectorNetwork",
    "DetectorProfile",
    "DigitCanvases",
    "OnnxDetector",
    "PartProfile",
    "coco_map",
    "create_detector",
    "evaluate_detector",
    "export_coco",
    "export_detector_onnx",
    "profile_detector",
    "train_detector",
]
