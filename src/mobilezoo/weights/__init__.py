"""Saving and loading weights: safetensors, the checkpoint files training tools write, and public checkpoints.

- :mod:`~mobilezoo.weights.files`: reading and writing files without running code from them (safetensors, or
  ``torch.load(weights_only=True)``), and the containers training tools save (see its docstring).
- :mod:`~mobilezoo.weights.loading`: :func:`load_weights`, strict by default, a prefix such as ``module.`` removed
  when it makes the keys match, and the adaptation of a classifier or stem for fine-tuning.
- :mod:`~mobilezoo.weights.torchvision`: torchvision's ImageNet checkpoints through torch.hub's download cache.
- :mod:`~mobilezoo.weights.timm`, :mod:`~mobilezoo.weights.megvii`, :mod:`~mobilezoo.weights.sources`: timm's
  checkpoints (``"timm:<model>[.<tag>]"``, the Hugging Face hub cache or a file) and megvii's official ShuffleNets
  (``"megvii:<file>"``), mapped by :mod:`~mobilezoo.weights.keymaps`' explicit per-family key maps.
- :mod:`~mobilezoo.weights.preprocessing`: each checkpoint's preprocessing, which ``predict``, ``eval`` and
  ``export`` apply.
"""

from mobilezoo.weights.files import (
    BUILD_KWARGS_KEY,
    CONTAINER_KEYS,
    SAFE_GLOBALS,
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    UnreadableWeightsError,
    WeightsAdaptedWarning,
    WeightsMismatchError,
    WeightsUnavailableError,
    find_state_dict,
    one_line,
    read_checkpoint,
    read_state_dict,
    save_weights,
    saved_build,
)
from mobilezoo.weights.loading import (
    adapt_state_dict,
    head_keys,
    load_weights,
    match_prefix,
    stem_key,
)
from mobilezoo.weights.preprocessing import Preprocessing, imagenet_classes, torchvision_preprocessing
from mobilezoo.weights.sources import (
    checkpoints_for,
    is_source_spec,
    load_source,
    preprocessing_for,
    resolve_source,
)
from mobilezoo.weights.torchvision import (
    torchvision_cache_path,
    torchvision_pretrained_info,
    torchvision_state_dict,
)

__all__ = [
    "BUILD_KWARGS_KEY",
    "CONTAINER_KEYS",
    "SAFETENSORS_SUFFIXES",
    "SAFE_GLOBALS",
    "TORCH_SUFFIXES",
    "Preprocessing",
    "UnreadableWeightsError",
    "WeightsAdaptedWarning",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "adapt_state_dict",
    "checkpoints_for",
    "find_state_dict",
    "head_keys",
    "imagenet_classes",
    "is_source_spec",
    "load_source",
    "load_weights",
    "match_prefix",
    "one_line",
    "preprocessing_for",
    "read_checkpoint",
    "read_state_dict",
    "resolve_source",
    "save_weights",
    "saved_build",
    "stem_key",
    "torchvision_cache_path",
    "torchvision_preprocessing",
    "torchvision_pretrained_info",
    "torchvision_state_dict",
]
