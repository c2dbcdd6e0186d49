"""Object detection on the zoo's backbones (the ShuffleNet V2 paper's Table 7, the textbook's Table 5-13).

``create_detector("fcos", backbone="shufflenet_v2_x0_5", num_classes=10, in_chans=1, image_size=128)`` builds a
torchvision detector on any registered model (:mod:`.detectors`, :mod:`.backbone`); :class:`DigitCanvases` is a
built-in deterministic detection set and :class:`CocoFolder` reads a user's COCO folder (:mod:`.data`); :func:`coco_map`
scores boxes with pycocotools' COCOeval (:mod:`.metrics`); :func:`train_detector` trains and scores, resumably, in a run
folder (:mod:`.train`), :func:`load_detector` rebuilds a saved one (:mod:`.io`), :func:`predict_detections` and
:func:`evaluate_detector_file` use it (:mod:`.inference`); :func:`export_detector_onnx` writes its network to ONNX without
the post-processing (:mod:`.export`), :func:`profile_detector` splits its cost into backbone / neck / head
(:mod:`.profile`); :mod:`.table` regenerates Table 5-13.
"""

from mobilezoo.detection.backbone import DetectionBackbone
from mobilezoo.detection.data import CanvasConfig, CocoFolder, DigitCanvases, export_coco
from mobilezoo.detection.detectors import DETECTORS, OPTIONS, create_detector
from mobilezoo.detection.export import DetectorExport, DetectorNetwork, OnnxDetector, export_detector_onnx
from mobilezoo.detection.inference import evaluate_detector_file, predict_detections
from mobilezoo.detection.io import load_detector, read_detector_metadata, save_detector
from mobilezoo.detection.metrics import CocoMetrics, coco_map
from mobilezoo.detection.profile import DetectorProfile, PartProfile, profile_detector
from mobilezoo.detection.train import (
    DetectionTrainConfig,
    DetectionTrainResult,
    evaluate_detector,
    load_detection_config,
    resume_detection_config,
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
    "evaluate_detector_file",
    "export_coco",
    "export_detector_onnx",
    "load_detection_config",
    "load_detector",
    "predict_detections",
    "profile_detector",
    "read_detector_metadata",
    "resume_detection_config",
    "save_detector",
    "train_detector",
]
