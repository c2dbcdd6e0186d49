"""The contract every mobilezoo model keeps, and the feature extractor built on it.

A model is a trunk (an ordered list of named modules whose sequential application is ``forward_features``) and a head
(``forward_head``). ``feature_info`` names the trunk modules whose outputs are the stage features; the
``features_only`` wrapper runs the trunk and returns those outputs.
"""

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from mobilezoo.layers import check_input

# a leaf of torch.fx traces (symbolic_trace, create_feature_extractor, prepare_fx): one call in the graph that checks the
# input when the graph runs, instead of shape comparisons a symbolic trace cannot evaluate
torch.fx.wrap("check_input")


@dataclass(frozen=True)
class FeatureInfo:
    """One stage feature map: its channels, its stride (reduction) relative to the input, and the trunk module giving it."""

    num_chs: int
    reduction: int
    module: str

    def to_dict(self) -> dict:
        return asdict(self)


class ZooModel(nn.Module):
    """Base class of the registered models.

    Subclasses set ``in_chans``, ``num_classes``, ``num_features`` (the pre-logits width), ``feature_info``, implement
    ``trunk()``, ``forward_features`` (running the trunk, after :meth:`check_input`), ``forward_head`` and
    ``reset_classifier``.
    """

    # TorchScript cannot type these (dataclasses, strings set by the registry); they are Python-side metadata
    __jit_ignored_attributes__ = ["feature_info", "model_name"]

    def __init__(self) -> None:
        super().__init__()
        self.min_input_size = 32  # the nets that reduce by 32 vanish below it; SqueezeNet sets its own (21, 17)

    def trunk(self) -> list[tuple[str, nn.Module]]:
        """The modules ``forward_features`` applies in order, as (dotted name, module). A module with the attribute
        ``two_inputs`` is called with (its input, the previous module's input), as NASNet's cells are."""
        raise NotImplementedError

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError naming the shape unless ``x`` is (N, in_chans, H, W) with H, W >= ``min_input_size``.

        :func:`mobilezoo.layers.check_input`, which stays one call in ``torch.fx`` graphs of the model.
        """
        check_input(x, self.in_chans, self.min_input_size)

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class SequentialTrunkModel(ZooModel):
    """A model whose trunk is the nn.Sequential ``self.features`` (MobileNets, VGG-16)."""

    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(f"features.{i}", m) for i, m in enumerate(self.features)]

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.features(x)


class DropoutLinearModel(ZooModel):
    """A model whose head is global average pooling and ``self.classifier = Sequential(Dropout, Linear)``
    (MobileNet V1/V2, EfficientNet, MnasNet, MobileNetV4): the classifier is ``self.classifier[1]``. Subclasses build
    it, set ``num_features`` and may override ``forward_head`` (a head conv after the pooling, say)."""

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        if pre_logits:
            return x
        return self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier[1]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes``; 0 removes it (Identity: the model returns its pooled features)."""
        check_num_classes(num_classes, allow_zero=True)
        self.num_classes = num_classes
        self.classifier[1] = new_classifier(self.num_features, num_classes)


class PooledClassifierModel(DropoutLinearModel, SequentialTrunkModel):
    """The MobileNet V1/V2 layout: the ``self.features`` trunk and a :class:`DropoutLinearModel` head."""


class PooledHeadModel(SequentialTrunkModel):
    """The MobileNetV3 / GhostNet layout: the ``self.features`` trunk, global average pooling, and
    ``self.classifier = Sequential(Linear (the head, e.g. 1280), activation, Dropout, Linear)``; pre-logits are the
    head's activated output. Subclasses build those and set ``num_features`` to the head's width."""

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        x = self.classifier[1](self.classifier[0](x))
        if pre_logits:
            return x
        return self.classifier[3](self.classifier[2](x))

    def get_classifier(self) -> nn.Module:
        return self.classifier[3]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes``; 0 removes it (Identity: the model returns its pre-logits)."""
        check_num_classes(num_classes, allow_zero=True)
        self.num_classes = num_classes
        self.classifier[3] = new_classifier(self.num_features, num_classes)


class PooledFcModel(ZooModel):
    """The ShuffleNet / GoogLeNet head: global average pooling, ``self.dropout``, then ``self.fc`` (an nn.Linear whose
    bias, present or not, is kept by ``reset_classifier``)."""

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean([2, 3])
        if pre_logits:
            return x
        return self.fc(self.dropout(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes``; 0 removes it (Identity: the model returns its pooled features)."""
        check_num_classes(num_classes, allow_zero=True)
        if isinstance(self.fc, nn.Linear):  # the family's choice of bias survives a reset to 0 and back
            self.fc_bias = self.fc.bias is not None
        self.num_classes = num_classes
        self.fc = new_classifier(self.num_features, num_classes, bias=getattr(self, "fc_bias", True))


def new_classifier(in_features: int, num_classes: int, bias: bool = True) -> nn.Module:
    """A classifier initialised as :func:`~mobilezoo.layers.init_weights` does (N(0, 0.01), zero bias) for
    ``num_classes >= 1``; ``nn.Identity`` for 0, timm's convention for a model that returns its pooled features."""
    if num_classes == 0:
        return nn.Identity()
    fc = nn.Linear(in_features, num_classes, bias=bias)
    nn.init.normal_(fc.weight, 0, 0.01)
    if fc.bias is not None:
        nn.init.zeros_(fc.bias)
    return fc


def check_num_classes(num_classes: int, allow_zero: bool = False) -> None:
    """Raise a ValueError unless ``num_classes`` is an int >= 1 (>= 0 with ``allow_zero``: 0 means no classifier)."""
    low = 0 if allow_zero else 1
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < low:
        extra = " (0: no classifier, the model returns its pooled features)" if allow_zero else ""
        raise ValueError(f"num_classes must be an integer >= {low}{extra}, got {num_classes!r}")


def check_in_chans(in_chans: int) -> None:
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")


def check_width_mult(width_mult: float) -> None:
    if not isinstance(width_mult, (int, float)) or not width_mult > 0:
        raise ValueError(f"width_mult must be a number > 0, got {width_mult!r}")


def check_drop_rate(drop_rate: float) -> None:
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate is a drop probability in [0, 1), got {drop_rate!r}")


class FeatureExtractor(nn.Module):
    """Runs a model's trunk and returns the feature maps at ``out_indices``: indices into ``feature_info`` (negative
    ones count from the end), or an int ``k`` for the last ``k`` (timm's convention)."""

    __jit_ignored_attributes__ = ["feature_info", "module_names"]

    def __init__(self, model: ZooModel, out_indices: int | tuple[int, ...] | None = None) -> None:
        super().__init__()
        n = len(model.feature_info)
        if out_indices is None:
            out_indices = tuple(range(n))
        elif isinstance(out_indices, int) and not isinstance(out_indices, bool):
            if not 1 <= out_indices <= n:
                raise ValueError(f"out_indices={out_indices} (the last k feature maps) must be in 1..{n}")
            out_indices = tuple(range(n - out_indices, n))
        elif not isinstance(out_indices, (tuple, list)):
            raise ValueError(f"out_indices must be a tuple of indices into feature_info or an int, got {out_indices!r}")
        out_indices = tuple(i + n if isinstance(i, int) and i < 0 else i for i in out_indices)
        bad = [i for i in out_indices if not isinstance(i, int) or not 0 <= i < n]
        if bad or not out_indices:
            raise ValueError(f"out_indices {out_indices!r} invalid: expected indices in 0..{n - 1} (or negative)")
        out_indices = tuple(sorted(set(out_indices)))
        self.feature_info: list[FeatureInfo] = [model.feature_info[i] for i in out_indices]
        self.in_chans = model.in_chans
        self.min_input_size = model.min_input_size
        wanted = {info.module for info in self.feature_info}
        names: list[str] = []
        modules: list[nn.Module] = []
        taps: list[bool] = []
        for name, module in model.trunk():
            names.append(name)
            modules.append(module)
            taps.append(name in wanted)
            wanted.discard(name)
            if not wanted:
                break
        if wanted:
            raise ValueError(f"feature modules {sorted(wanted)} are not in the model's trunk")
        self.module_names = names
        self.stages = nn.ModuleList(modules)
        self.taps = taps

    def forward(self, x: Tensor) -> list[Tensor]:
        check_input(x, self.in_chans, self.min_input_size)  # one call in torch.fx graphs (torch.fx.wrap above)
        features: list[Tensor] = []
        prev = x
        for i, module in enumerate(self.stages):
            # a trunk module with the attribute ``two_inputs`` (a NASNet cell) also reads the previous module's input
            if hasattr(module, "two_inputs"):
                x, prev = module(x, prev), x
            else:
                x, prev = module(x), x
            if self.taps[i]:
                features.append(x)
        return features
