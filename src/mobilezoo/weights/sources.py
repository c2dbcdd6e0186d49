"""Public checkpoints in other code bases' layouts: ``"timm:..."`` and ``"megvii:..."`` for ``create_model(weights=)``.

:func:`resolve_source` reads the string (no download yet): which family's key map, the model arguments the port
needs (``padding="tf"``, ``bn_eps``, ``act``, ``shuffle``), those the architecture needs, and the checkpoint's
preprocessing. :func:`load_source` then fetches the file, maps its keys (a :class:`~mobilezoo.weights.keymap.KeyMap`)
and loads them strictly: every tensor placed, every shape checked, leftovers an error naming them. A checkpoint of
another family, width or layout raises one line naming the file and the mismatch, and, when another registered model
would take it, which one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from mobilezoo.weights import megvii as megvii_files
from mobilezoo.weights import timm as timm_files
from mobilezoo.weights.files import WeightsMismatchError, find_state_dict, read_checkpoint
from mobilezoo.weights.keymap import KeyMap
from mobilezoo.weights.keymaps import FamilyWeights, families, timm_arch, timm_family
from mobilezoo.weights.loading import load_weights
from mobilezoo.weights.preprocessing import MEGVII, Preprocessing

SOURCES = ("timm", "megvii")


def is_source_spec(weights: Any) -> bool:
    """Whether ``weights`` names a checkpoint in another layout: a string starting ``"timm:"`` or ``"megvii:"``."""
    return isinstance(weights, str) and weights.partition(":")[0] in SOURCES and ":" in weights


@dataclass
class ResolvedWeights:
    """What :func:`resolve_source` found: the key map, the arguments, the preprocessing, how to fetch the tensors."""

    spec: str
    source: str
    keymap: Callable[[nn.Module], KeyMap]
    port: dict[str, Any]
    arch: dict[str, Any]
    preprocessing: Preprocessing
    family: FamilyWeights
    fetch: Callable[[bool], tuple[dict[str, Tensor], str]]  # progress -> (state_dict, label naming the file)
    candidates: tuple[tuple[str, dict[str, Any]], ...] = field(default_factory=tuple)  # models it might fit


def _timm_models() -> str:
    return ", ".join(arch.name for fw in families().values() for arch in fw.timm)


def _strip_module(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _preprocessing_from_config(config: dict[str, Any], fallback: Preprocessing, source: str) -> Preprocessing:
    """A hub ``config.json``'s ``pretrained_cfg`` as a Preprocessing (its missing values from ``fallback``)."""
    cfg = config.get("pretrained_cfg") or {}
    size = cfg.get("input_size") or [3, fallback.input_size]
    return Preprocessing(
        source=source,
        input_size=int(size[-1]),
        crop_pct=float(cfg.get("crop_pct", fallback.crop_pct)),
        interpolation=str(cfg.get("interpolation", fallback.interpolation)),
        mean=tuple(cfg.get("mean", fallback.mean)),
        std=tuple(cfg.get("std", fallback.std)),
        num_classes=int(config.get("num_classes", fallback.num_classes)),
    )


def _resolve_timm(model_name: str, family: str, spec: str) -> ResolvedWeights:
    parsed = timm_files.parse(spec)
    arch_name, tag, path = parsed.arch, parsed.tag, parsed.path
    local: Any = None
    config = None
    if path is not None and arch_name is None:  # the file must say what it holds
        local = read_checkpoint(path)
        config = timm_files.config_beside(path)
        stored = local.get("arch") if isinstance(local, dict) and isinstance(local.get("arch"), str) else None
        if stored is None and config is not None and isinstance(config.get("architecture"), str):
            stored = config["architecture"]
            tag = (config.get("pretrained_cfg") or {}).get("tag") or None
        if stored is None:
            raise ValueError(
                f"cannot tell which timm model {str(path)!r} holds (no 'arch' entry as timm's train.py writes, no "
                f"config.json beside it): pass weights='timm:<timm model>@{path}', e.g. one of {_timm_models()}"
            )
        arch_name, _, stored_tag = stored.partition(".")
        tag = tag or stored_tag or None
    arch = timm_arch(str(arch_name))
    if arch is None:
        raise ValueError(
            f"timm's {arch_name} has no counterpart in mobilezoo; the timm models that load: {_timm_models()}"
        )
    fw = timm_family(arch.name)
    assert fw is not None and fw.timm_keymap is not None
    if fw.family != family or arch.model != model_name:
        raise ValueError(
            f"timm's {arch.name} is a {fw.family} that loads into {arch.model}, not into {model_name} ({family}): "
            f"create_model({arch.model!r}, weights={spec!r})"
        )
    name = f"{arch.name}.{tag}" if tag else arch.name
    if config is not None and config.get("pretrained_cfg"):
        known = arch.tag(tag) if tag in {t.tag for t in arch.tags} else None
        base = arch.preprocessing(known.tag if known else None)
        pre = _preprocessing_from_config(config, base, f"timm:{name}")
    elif path is not None and tag is not None and tag not in {t.tag for t in arch.tags}:
        pre = arch.preprocessing(None)  # a tag of one's own training: timm's default preprocessing for the arch
    else:
        pre = arch.preprocessing(tag)
    if path is None and arch.tag(tag) is None:
        raise ValueError(
            f"timm publishes no weights for {arch.name}: pass a file of your own, weights='timm:{arch.name}@<file>'"
        )
    if path is None:
        name = f"{arch.name}.{arch.tag(tag).tag}"  # type: ignore[union-attr]

    def fetch(progress: bool) -> tuple[dict[str, Tensor], str]:
        if path is not None:
            label = f"timm checkpoint {str(path)!r}"
            obj = local if local is not None else read_checkpoint(path)
            return _strip_module(find_state_dict(obj, label)), label
        hub = timm_files.hub_file(name, progress)
        label = f"timm's {name} checkpoint {str(hub)!r}"
        return _strip_module(find_state_dict(timm_files.read_hub_state(name, hub), label)), label

    candidates = tuple((a.model, {**a.port, **a.arch}) for a in fw.timm)
    return ResolvedWeights(spec, "timm", fw.timm_keymap, dict(arch.port), dict(arch.arch), pre, fw, fetch, candidates)


def _resolve_megvii(model_name: str, family: str, spec: str) -> ResolvedWeights:
    path = megvii_files.parse(spec)
    fw = families().get(family)
    with_megvii = {m: f for f in families().values() if f.megvii for m in f.megvii.models}
    if fw is None or fw.megvii is None or fw.megvii_keymap is None or model_name not in fw.megvii.models:
        raise ValueError(
            f"megvii publishes no checkpoint for {model_name}; the official ShuffleNet checkpoints load into "
            f"{', '.join(with_megvii)}"
        )
    megvii = fw.megvii
    markers = {f.family: f.megvii.marker for f in families().values() if f.megvii and f.megvii.marker}

    def fetch(progress: bool) -> tuple[dict[str, Tensor], str]:
        label = f"megvii checkpoint {str(path)!r}"
        state = megvii_files.read(path)
        found = megvii_files.family_of(state, {family: markers[family]})
        other = None if found else megvii_files.family_of(state, markers)
        if other is not None:
            raise ValueError(
                f"{label} is a {other} checkpoint (its units hold {markers[other]}), not a {family} one: load it "
                f"into one of {', '.join(m for m, f in with_megvii.items() if f.family == other)}"
            )
        return state, label

    candidates = tuple((m, {**megvii.port, **megvii.arch}) for m in megvii.models)
    pre = replace(MEGVII, source=f"megvii:{path.name}")
    return ResolvedWeights(
        spec, "megvii", fw.megvii_keymap, dict(megvii.port), dict(megvii.arch), pre, fw, fetch, candidates
    )


def resolve_source(model_name: str, family: str, spec: str) -> ResolvedWeights:
    """Read ``spec`` (``"timm:..."``/``"megvii:..."``) for registered ``model_name`` of ``family`` (nothing downloaded).

    Raises ValueError (one line) for a checkpoint of another family or model, an unknown timm model or tag, a timm
    file that does not say what it holds, or a model without such checkpoints; FileNotFoundError for a missing file.
    """
    source = spec.partition(":")[0]
    if source == "timm":
        return _resolve_timm(model_name, family, spec)
    if source == "megvii":
        return _resolve_megvii(model_name, family, spec)
    raise ValueError(f"unknown weights source {source!r}; expected one of {SOURCES}")


def _shapes_fit(resolved: ResolvedWeights, state: dict[str, Tensor], model: nn.Module) -> bool:
    own = model.state_dict()
    try:
        mapped = resolved.keymap(model).apply(state, own, "")
    except (WeightsMismatchError, IndexError, AttributeError, TypeError):
        return False
    return mapped.keys() == own.keys() and all(mapped[k].shape == own[k].shape for k in own)


def fitting_models(resolved: ResolvedWeights, state: dict[str, Tensor]) -> list[str]:
    """The registered models (built with the port's arguments) whose every tensor shape the checkpoint fits."""
    from mobilezoo.registry import create_model

    fits = []
    for name, kwargs in resolved.candidates:
        with torch.device("meta"):
            model = create_model(name, **kwargs)
        if name not in fits and _shapes_fit(resolved, state, model):
            fits.append(name)
    return fits


def load_source(
    model: nn.Module, resolved: ResolvedWeights, name: str, *, adapt: bool = True, progress: bool = True
) -> dict[str, Any]:
    """Fetch ``resolved``'s checkpoint, map it onto ``model`` (registered as ``name``) and load it strictly (see the
    module docstring).

    With ``adapt`` a checkpoint differing only in the class count or input channels is adapted as
    :func:`~mobilezoo.weights.load_weights` does. Returns load_weights' report. Raises
    :class:`~mobilezoo.weights.WeightsMismatchError` naming the file, the mismatched tensors under both names and the
    registered models the checkpoint fits; ValueError for an unreadable or refused file; OSError when a hub file is
    unavailable.
    """
    state, label = resolved.fetch(progress)
    keymap = resolved.keymap(model)
    try:
        mapped = keymap.apply(state, model.state_dict(), label)
        return load_weights(model, mapped, strict=True, adapt=adapt, label=label)
    except WeightsMismatchError as e:
        if not e.mismatched:
            raise
        fits = [m for m in fitting_models(resolved, state) if m != name]
        hint = f" (it fits {', '.join(fits)})" if fits else ""
        mismatched = [(f"{keymap.source_key(k) or k} -> {k}", a, b) for k, a, b in e.mismatched]
        raise WeightsMismatchError(e.missing, e.unexpected, mismatched, label, f"does not fit {name}{hint}") from None


def checkpoints_for(model_name: str, family: str) -> list[dict[str, Any]]:
    """The timm and megvii checkpoints that load into ``model_name``: for each, the ``weights=`` string, the model
    arguments ``create_model`` sets (``model_kwargs``) and those the caller must give (``requires``), and its
    preprocessing."""
    out: list[dict[str, Any]] = []
    fw = families().get(family)
    if fw is None:
        return out
    for arch in fw.timm:
        if arch.model != model_name:
            continue
        entry = {"source": "timm", "model_kwargs": dict(arch.port), "requires": dict(arch.arch)}
        if not arch.tags:
            out.append({**entry, "weights": f"timm:{arch.name}@<file>", "note": "timm publishes no weights for it"})
        for t in arch.tags:
            out.append(
                {**entry, "weights": f"timm:{arch.name}.{t.tag}", "preprocessing": arch.preprocessing(t.tag).to_dict()}
            )
    if fw.megvii is not None and model_name in fw.megvii.models:
        out.append(
            {
                "source": "megvii",
                "weights": "megvii:<file>",
                "model_kwargs": dict(fw.megvii.port),
                "requires": dict(fw.megvii.arch),
                "preprocessing": MEGVII.to_dict(),
                "note": "the official checkpoint of megvii-model/ShuffleNet-Series (download links in its README)",
            }
        )
    return out


def preprocessing_for(model_name: str, weights: Any) -> Preprocessing | None:
    """The preprocessing of a public checkpoint for registered ``model_name`` (``"torchvision[:<member>]"``,
    ``"timm:..."``, ``"megvii:..."``, or a torchvision weights enum member), without loading it; None for anything
    else (a file of one's own, whose preprocessing is in its metadata if a mobilezoo run wrote it)."""
    from mobilezoo.registry import _ecosystem_arguments, model_card

    card = model_card(model_name)  # an unknown name raises here
    if is_source_spec(weights):
        return resolve_source(card.name, card.family, str(weights)).preprocessing
    weights = _ecosystem_arguments(card.name, weights, 1000, {})[0]  # an enum member or "DEFAULT" -> "torchvision:.."
    if isinstance(weights, str) and (weights == "torchvision" or weights.startswith("torchvision:")):
        tv = card.torchvision
        if tv is None or tv.weights is None:
            raise ValueError(f"torchvision has no checkpoint for {model_name!r}")
        from mobilezoo.weights.preprocessing import torchvision_preprocessing

        return torchvision_preprocessing(tv.weights, weights.partition(":")[2] or "DEFAULT")
    return None
