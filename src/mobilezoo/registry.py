"""The model registry: ``register_model``, ``create_model``, ``list_models`` and the model cards.

Each registered builder carries a :class:`ModelCard`. The paper's numbers on a card come from one row of
``paper_numbers.csv`` (shipped in the package, the same file the tests check the counts against), so the CLI, the
reports and the tests read one source.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from os import PathLike
from typing import Any

from torch import nn

from mobilezoo.models.base import FeatureExtractor, ZooModel, check_in_chans, check_num_classes

PAPERS = {
    "MobileNetV1": "Howard et al., MobileNets (arXiv:1704.04861, 2017)",
    "MobileNetV2": "Sandler et al., MobileNetV2 (arXiv:1801.04381, CVPR 2018)",
    "MobileNetV3": "Howard et al., Searching for MobileNetV3 (arXiv:1905.02244v5, ICCV 2019)",
    "ShuffleNetV1": "Zhang et al., ShuffleNet (arXiv:1707.01083v2, CVPR 2018)",
    "ShuffleNetV2": "Ma et al., ShuffleNet V2 (arXiv:1807.11164, ECCV 2018)",
    "SqueezeNet": "Iandola et al., SqueezeNet (arXiv:1602.07360, 2016)",
    "MnasNet": "Tan et al., MnasNet (arXiv:1807.11626v3, CVPR 2019)",
    "NASNet": "Zoph et al., NASNet: Learning Transferable Architectures (arXiv:1707.07012v4, CVPR 2018)",
    "Reference": "Howard et al., MobileNets (arXiv:1704.04861) Table 8 (reference networks)",
    "MobileNetV4": "Qin et al., MobileNetV4: Universal Models for the Mobile Ecosystem (arXiv:2404.10518, ECCV 2024)",
    "GhostNet": "Han et al., GhostNet: More Features from Cheap Operations (arXiv:1911.11907v2, CVPR 2020)",
    "EfficientNet": "Tan & Le, EfficientNet: Rethinking Model Scaling for CNNs (arXiv:1905.11946v5, ICML 2019)",
}


@dataclass(frozen=True)
class PaperRow:
    """One row of ``paper_numbers.csv``: the paper's figures and the reference count for one variant."""

    family: str
    variant: str
    resolution: int
    top1: float | None
    madds_m: float | None
    params_m: float | None
    source: str
    counted_on: str
    counted_params: int | None
    counted_madds_m: float | None
    notes: str


def _opt(value: str, kind: Callable[[str], Any]) -> Any:
    return kind(value) if value.strip() else None


@functools.cache
def paper_rows() -> tuple[PaperRow, ...]:
    """All rows of the packaged ``paper_numbers.csv``."""
    text = resources.files("mobilezoo").joinpath("paper_numbers.csv").read_text(encoding="utf-8")
    return tuple(
        PaperRow(
            family=r["family"],
            variant=r["variant"],
            resolution=int(r["resolution"]),
            top1=_opt(r["paper_top1"], float),
            madds_m=_opt(r["paper_madds_m"], float),
            params_m=_opt(r["paper_params_m"], float),
            source=r["source"],
            counted_on=r["counted_on"],
            counted_params=_opt(r["counted_params"], int),
            counted_madds_m=_opt(r["counted_madds_m"], float),
            notes=r["notes"],
        )
        for r in csv.DictReader(text.splitlines())
    )


def paper_row(variant: str) -> PaperRow:
    for row in paper_rows():
        if row.variant == variant:
            return row
    raise KeyError(f"no row {variant!r} in paper_numbers.csv")


@dataclass(frozen=True)
class TorchvisionRef:
    """The torchvision model with the same architecture: its builder, weights enum and our kwargs that match it."""

    builder: str
    weights: str | None = None  # e.g. "MobileNet_V2_Weights"; None when torchvision ships no checkpoint
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """What the registry knows about a model: its paper, the paper's figures, and the torchvision counterpart."""

    name: str
    family: str
    paper: str
    table: str
    paper_variant: str | None = None
    resolution: int = 224
    paper_top1: float | None = None
    paper_madds_m: float | None = None
    paper_params_m: float | None = None
    notes: str = ""
    torchvision: TorchvisionRef | None = None
    pretrained: dict[str, Any] | None = None
    # every public checkpoint that loads (torchvision's, timm's, megvii's): the weights= string, the model arguments
    # create_model sets for it, those the caller gives, its preprocessing; filled by model_card()
    checkpoints: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "family": self.family,
            "paper": self.paper,
            "table": self.table,
            "paper_variant": self.paper_variant,
            "resolution": self.resolution,
            "paper_top1": self.paper_top1,
            "paper_madds_m": self.paper_madds_m,
            "paper_params_m": self.paper_params_m,
            "notes": self.notes,
            "torchvision_builder": self.torchvision.builder if self.torchvision else None,
            "pretrained": self.pretrained,
            "checkpoints": list(self.checkpoints),
        }
        return out


_BUILDERS: dict[str, Callable[..., ZooModel]] = {}
_CARDS: dict[str, ModelCard] = {}


def register_model(
    *,
    family: str,
    table: str,
    paper_variant: str | None = None,
    notes: str = "",
    torchvision: TorchvisionRef | None = None,
) -> Callable[[Callable[..., ZooModel]], Callable[..., ZooModel]]:
    """Register a builder under its function name with a card whose figures come from ``paper_variant``'s row."""

    def decorator(fn: Callable[..., ZooModel]) -> Callable[..., ZooModel]:
        name = fn.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        card = ModelCard(
            name=name, family=family, paper=PAPERS[family], table=table, notes=notes, torchvision=torchvision
        )
        if paper_variant is not None:
            row = paper_row(paper_variant)
            card = replace(
                card,
                paper_variant=paper_variant,
                resolution=row.resolution,
                paper_top1=row.top1,
                paper_madds_m=row.madds_m,
                paper_params_m=row.params_m,
            )
        _BUILDERS[name] = fn
        _CARDS[name] = card
        return fn

    return decorator


@functools.cache
def _ensure_models_imported() -> None:
    """Import every module of ``mobilezoo.models`` once: their ``@register_model`` builders fill the registry."""
    import mobilezoo.models

    for module in pkgutil.iter_modules(mobilezoo.models.__path__):
        if module.name != "base":
            importlib.import_module(f"mobilezoo.models.{module.name}")


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a glob such as ``"mobilenet_v3*"``."""
    _ensure_models_imported()
    names = sorted(_BUILDERS)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def _lookup(name: str) -> str:
    _ensure_models_imported()
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see mobilezoo.list_models()"
        raise ValueError(f"unknown model {name!r}{hint}")
    return name


def model_card(name: str) -> ModelCard:
    """The card of a registered model; for models with a torchvision checkpoint it includes its preprocessing and top-1,
    and ``checkpoints`` lists every public checkpoint that loads (torchvision's, timm's, megvii's)."""
    card = _CARDS[_lookup(name)]
    if card.torchvision is not None and card.torchvision.weights is not None and card.pretrained is None:
        from mobilezoo.weights import torchvision_pretrained_info

        card = replace(card, pretrained=torchvision_pretrained_info(card.torchvision.weights))
    return replace(card, checkpoints=_checkpoints(card.name))


@functools.cache
def _checkpoints(name: str) -> tuple[dict[str, Any], ...]:
    from mobilezoo import weights as wts

    card = _CARDS[name]
    out: list[dict[str, Any]] = []
    tv = card.torchvision
    if tv is not None and tv.weights is not None:
        import torchvision.models

        for member in getattr(torchvision.models, tv.weights):
            out.append(
                {
                    "source": "torchvision",
                    "weights": f"torchvision:{member.name}",
                    "model_kwargs": dict(tv.model_kwargs),
                    "requires": {},
                    "preprocessing": wts.torchvision_preprocessing(tv.weights, member.name).to_dict(),
                }
            )
    return tuple(out + wts.checkpoints_for(name, card.family))


# timm's and torchvision's create-model arguments that have no mobilezoo counterpart, and what to use instead
_FOREIGN_ARGUMENTS = {
    "pretrained": "pass weights='torchvision' (torchvision's ImageNet checkpoint, for the models that have one), "
    "weights='timm:<timm model>' (timm's, see model_card(name).checkpoints) or weights=<file>",
    "checkpoint_path": "pass weights=<file>",
    "drop_path_rate": "this model has no stochastic depth (NASNet-A Mobile and EfficientNet take drop_path_rate, "
    "MobileNetV4 stochastic_depth_rate); drop_rate sets the classifier's dropout",
    "dropout": "pass drop_rate (the classifier's dropout probability)",
    "norm_layer": "the models use nn.BatchNorm2d; convert it after creation (e.g. "
    "nn.SyncBatchNorm.convert_sync_batchnorm(model)) or fold it for inference with mobilezoo.deploy.fuse(model)",
}


def _ecosystem_arguments(
    name: str, weights: Any, num_classes: int, kwargs: dict[str, Any]
) -> tuple[Any, int, bool, bool]:
    """timm's and torchvision's conventions, accepted where they mean something here; the rest raise a ValueError
    naming the argument and what to use instead (also any argument the model's class does not take).

    Accepted: ``pretrained=False``, ``global_pool="avg"`` (what every model does), ``progress`` (torchvision's download
    progress bar), ``num_classes=0`` (no classifier: the model returns its pooled features, as timm's), and torchvision
    weights as an enum member (``MobileNet_V2_Weights.DEFAULT``) or string (``"DEFAULT"``, ``"IMAGENET1K_V1"``,
    ``"MobileNet_V2_Weights.IMAGENET1K_V1"``), converted to ``"torchvision:<member>"``. Pops what it accepts from
    ``kwargs``; returns (weights, num_classes to build with, whether to drop the classifier after loading, progress).
    """
    import inspect
    import re
    import typing
    from enum import Enum
    from pathlib import Path

    if kwargs.get("pretrained", True) is False:
        del kwargs["pretrained"]
    progress = kwargs.pop("progress", True)
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True or False (torchvision's download progress bar), got {progress!r}")
    pool = kwargs.pop("global_pool", "avg")
    if pool != "avg":
        raise ValueError(
            f"global_pool={pool!r}: mobilezoo models pool by average only ('avg'); for the unpooled feature map use "
            "model.forward_features(x) or create_model(..., features_only=True)"
        )
    try:  # the builder's return annotation is the model class, whose __init__ lists the arguments
        params = inspect.signature(typing.get_type_hints(_BUILDERS[name])["return"]).parameters
    except Exception:  # a builder registered without a resolvable class annotation: its own errors apply
        params = {}
    for key, hint in _FOREIGN_ARGUMENTS.items():
        if key in kwargs and key not in params:  # NASNet and EfficientNet take drop_path_rate themselves
            raise ValueError(f"{key}={kwargs[key]!r} is not a mobilezoo argument: {hint}")
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        takes = [p for p in params if p not in ("num_classes", "in_chans")]
        unknown = sorted(set(kwargs) - set(takes))
        if unknown:
            raise ValueError(
                f"{name} takes no argument {unknown[0]!r}; it takes num_classes, in_chans, weights, features_only, "
                f"out_indices and {', '.join(takes)}"
            )
    tv = _CARDS[name].torchvision
    want = tv.weights if tv is not None else None  # e.g. "MobileNet_V2_Weights"; None: torchvision has no checkpoint
    if isinstance(weights, Enum):
        enum_name, member = type(weights).__name__, weights.name  # DEFAULT is an alias: .name is the real member
        if not enum_name.endswith("_Weights"):
            raise ValueError(
                f"weights={weights!r} is not a torchvision weights enum member (such as X_Weights.DEFAULT)"
            )
    elif isinstance(weights, str) and not Path(weights).exists():
        match = re.fullmatch(r"(?:(\w+_Weights)\.)?([A-Z][A-Z0-9_]*)", weights)
        enum_name, member = match.groups() if match else (None, None)
    else:
        enum_name, member = None, None
    if enum_name is not None and want is not None and enum_name != want:
        raise ValueError(f"weights={weights!r} are {enum_name}'s, another architecture's; {name} takes {want}")
    if member is not None:
        weights = f"torchvision:{member}"  # the create_model form; a model without a checkpoint is refused there
    check_num_classes(num_classes, allow_zero=True)
    return weights, num_classes or 1000, num_classes == 0, progress


def _jsonable(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, (bool, int, float, str))
        or (isinstance(value, (list, tuple)) and all(_jsonable(v) for v in value))
    )


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    weights: str | PathLike | None = None,
    adapt_weights: bool = True,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``weights``: None (random init), ``"torchvision"`` (torchvision's default ImageNet checkpoint for the same
    architecture, through torch.hub's download cache ``$TORCH_HOME/hub/checkpoints``), ``"torchvision:IMAGENET1K_V1"``
    (a named one), ``"timm:<timm model>[.<tag>]"`` (timm's weights, from the Hugging Face hub cache; also
    ``"timm:<timm model>@<file>"`` or ``"timm:<file>"``), ``"megvii:<file>"`` (the official ShuffleNet V1/V2
    checkpoints), each mapped by the family's key map with the model arguments the port needs (``padding="tf"``,
    ``bn_eps``, ``act``, ``shuffle``) set here; these public checkpoints set their preprocessing as
    ``model.preprocessing`` (``model_card(name).checkpoints`` lists what loads; see :mod:`mobilezoo.weights`). Or a
    path to a weights file: safetensors, or a PyTorch checkpoint (``.pth``/``.pt``/``.ckpt``/
    ``.pth.tar``/``.bin``: a plain state_dict or what torchvision's reference scripts, timm's ``train.py``, PyTorch
    Lightning or DDP save; see :mod:`mobilezoo.weights`). Whatever the source, a checkpoint that differs from the
    model only in the classifier's class count gets a new classifier for ``num_classes``, and one that differs only in
    the stem's input channels a stem adapted to ``in_chans``, each with a
    :class:`~mobilezoo.weights.WeightsAdaptedWarning` naming the tensors; any other difference (another width or
    family) raises :class:`~mobilezoo.weights.WeightsMismatchError`; ``adapt_weights=False`` makes the head and stem
    differences errors too (for evaluating weights, whose classifier must fit). ``features_only=True`` returns a
    module giving the feature maps listed in ``feature_info`` (``out_indices`` selects some of them).
    """
    from mobilezoo import weights as wts

    name = _lookup(name)
    weights, num_classes, pooled_only, progress = _ecosystem_arguments(name, weights, num_classes, model_kwargs)
    check_num_classes(num_classes)
    check_in_chans(in_chans)
    if out_indices is not None and not features_only:
        raise ValueError("out_indices is only meaningful with features_only=True")
    card = _CARDS[name]
    builder = _BUILDERS[name]
    tv_enum = None
    source = None
    if wts.is_source_spec(weights):  # "timm:..." / "megvii:...": another layout, mapped by the family's key map
        source = wts.resolve_source(name, card.family, str(weights))
        for key, value in source.port.items():
            if model_kwargs.setdefault(key, value) != value:
                raise ValueError(f"the {weights!r} checkpoint needs {key}={value!r}, got {model_kwargs[key]!r}")
    if isinstance(weights, str) and (weights == "torchvision" or weights.startswith("torchvision:")):
        tv = card.torchvision
        if tv is None or tv.weights is None:
            have = [n for n, c in _CARDS.items() if c.torchvision and c.torchvision.weights]
            raise ValueError(
                f"torchvision has no checkpoint for {name!r}; models that have one: {', '.join(sorted(have))}"
            )
        for key, value in tv.model_kwargs.items():
            if model_kwargs.setdefault(key, value) != value:
                raise ValueError(
                    f"torchvision's checkpoint for {name!r} needs {key}={value!r}, got {model_kwargs[key]!r}"
                )
        tv_enum = tv.weights
    if weights is not None and tv_enum is None and source is None:
        # a file save_weights wrote for this same model: build it with the arguments it was saved with
        saved_name, saved = wts.saved_build(weights)
        for key, value in saved.items() if saved_name == name else ():
            value = tuple(value) if isinstance(value, list) else value  # JSON gives tuples back as lists
            if model_kwargs.setdefault(key, value) != value:
                raise ValueError(
                    f"{str(weights)!r} holds {name} built with {key}={value!r}, got {key}={model_kwargs[key]!r}: "
                    f"drop the argument or pass {key}={value!r}"
                )
    model = builder(num_classes=num_classes, in_chans=in_chans, **model_kwargs)  # bad kwargs fail before a download
    # what it computes depends on these (not on drop rates): save_weights records them for the reload
    model.build_kwargs = {k: v for k, v in model_kwargs.items() if "drop" not in k and _jsonable(v)}  # type: ignore[assignment]
    if tv_enum is not None:
        member = str(weights).partition(":")[2] or "DEFAULT"
        state = wts.torchvision_state_dict(tv_enum, member, progress=progress)
        wts.load_weights(model, state, adapt=adapt_weights, label=f"torchvision's {tv_enum}.{member} checkpoint")
        model.preprocessing = wts.torchvision_preprocessing(tv_enum, member)  # type: ignore[assignment]
    elif source is not None:
        for key, value in source.arch.items():  # the architecture the checkpoint is for: the caller's to choose
            if getattr(model, key, value) != value:
                raise ValueError(
                    f"the {weights!r} checkpoint is for {key}={value!r}; {name} was built with "
                    f"{key}={getattr(model, key)!r}: create_model({name!r}, {key}={value!r}, weights={weights!r})"
                )
        wts.load_source(model, source, name, adapt=adapt_weights, progress=progress)
        model.preprocessing = source.preprocessing  # type: ignore[assignment]
    elif weights is not None:
        wts.load_weights(model, weights, adapt=adapt_weights)
    if pooled_only:
        model.reset_classifier(0)
    model.model_name = name  # type: ignore[assignment]
    if features_only:
        extractor = FeatureExtractor(model, out_indices)
        if hasattr(model, "preprocessing"):
            extractor.preprocessing = model.preprocessing  # type: ignore[assignment]
        return extractor
    return model
