"""Loading a state_dict into a model: strict by default, a ``module.``-style prefix removed when it makes the keys
match, and (``adapt=True``) a classifier re-initialised for another class count or a stem adapted to other input
channels, each with a :class:`~mobilezoo.weights.files.WeightsAdaptedWarning` naming the tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from os import PathLike
from typing import Any

from torch import Tensor, nn

from mobilezoo.weights.files import WeightsAdaptedWarning, WeightsMismatchError, find_state_dict, read_state_dict


def _module_name(model: nn.Module, module: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if m is module), None)


def head_keys(model: nn.Module) -> list[str]:
    """The state_dict keys of ``model.get_classifier()`` (empty for a model without one)."""
    try:
        head = model.get_classifier()  # type: ignore[operator]
    except (AttributeError, NotImplementedError):
        return []
    name = _module_name(model, head) if isinstance(head, nn.Module) else None
    if name is None:
        return []
    return [f"{name}.{k}" if name else k for k in head.state_dict()]


def stem_key(model: nn.Module) -> str | None:
    """The weight key of the model's first convolution (the one reading the input), or None."""
    trunk = model.trunk() if hasattr(model, "trunk") else [("", model)]
    for prefix, module in trunk[:1]:
        for name, m in module.named_modules():
            if isinstance(m, nn.Conv2d):
                return ".".join(p for p in (prefix, name, "weight") if p)
    return None


def _adapt_stem_tensor(w: Tensor, chans: int) -> Tensor:
    """A conv weight for ``chans`` input channels from one for ``w.shape[1]``: summed for 1, tiled and rescaled else."""
    if chans == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-chans // w.shape[1])
    return w.repeat(1, reps, 1, 1)[:, :chans] * (w.shape[1] / chans)


def adapt_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Adapt a checkpoint's stem to a model built with another ``in_chans``.

    The model's first convolution (:func:`stem_key`), when its checkpoint weight differs only in the input-channel
    dimension, is summed to 1 channel or tiled and rescaled for more (as timm does, so a grey image repeated on every
    channel gives the same output); everything else is unchanged.
    """
    out = dict(state)
    key = stem_key(model)
    own = model.state_dict().get(key) if key else None
    w = state.get(key) if key else None
    if (
        own is not None
        and w is not None
        and w.dim() == 4
        and w.shape != own.shape
        and (w.shape[0], *w.shape[2:]) == (own.shape[0], *own.shape[2:])
    ):
        out[key] = _adapt_stem_tensor(w, own.shape[1])  # type: ignore[index]
    return out


def match_prefix(state: Mapping[str, Tensor], own_keys: set[str] | Mapping[str, Any]) -> tuple[str, int]:
    """The prefix whose removal makes most of ``state``'s keys model keys, and how many it makes (``""``: none).

    Candidates are every dotted prefix of every key (``module.``, ``_orig_mod.``, ``model.``, ``module._orig_mod.``,
    ...); ties go to the shorter one, so a prefix is removed only when it matches more keys than keeping it.
    """
    counts: dict[str, int] = {"": sum(k in own_keys for k in state)}
    for key in state:
        for i, ch in enumerate(key):
            if ch == "." and key[i + 1 :] in own_keys:
                prefix = key[: i + 1]
                counts[prefix] = counts.get(prefix, 0) + 1
    best = max(counts, key=lambda p: (counts[p], -len(p)))
    return best, counts[best]


def load_weights(
    model: nn.Module,
    source: str | PathLike | Mapping[str, Any],
    strict: bool = True,
    *,
    adapt: bool = False,
    label: str | None = None,
) -> dict[str, list[str]]:
    """Load a checkpoint (a path, a state_dict or a training tool's checkpoint dict) into ``model``.

    With ``strict=True`` any missing key, unexpected key or shape mismatch raises :class:`WeightsMismatchError` (a
    ValueError) naming them all. With ``strict=False`` the matching tensors are loaded and the others reported;
    shape mismatches always raise, and so does a checkpoint of which no tensor matches the model.

    With ``adapt=True`` (what ``create_model(weights=...)`` uses) a checkpoint that differs from the model only in the
    classifier's class count gets a re-initialised classifier (``model.reset_classifier``), and one that differs only
    in the stem's input channels an adapted stem (:func:`adapt_state_dict`); each emits a
    :class:`WeightsAdaptedWarning` naming the tensors. Any other difference still raises.

    Returns ``{"missing", "unexpected", "mismatched", "reinitialized", "adapted", "ignored"}`` (lists of keys;
    ``ignored``: keys outside the prefix that matched the model, e.g. a LightningModule's loss weights). ``label``
    names the source in errors and notices (default: the path, or "the state_dict").
    """
    if isinstance(source, Mapping):
        what = label or "the state_dict"
        state = find_state_dict(source, what)
    else:
        what = label or f"checkpoint {str(source)!r}"
        state = read_state_dict(source)
    own = model.state_dict()
    prefix, _ = match_prefix(state, own)
    ignored = [k for k in state if not k.startswith(prefix)]
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if not any(k in own and v.shape == own[k].shape for k, v in state.items()):
        headline = "matches no tensor of the model" + layout_hint(state, source)
        raise WeightsMismatchError(missing, unexpected, mismatched, what, headline)

    reinit: list[str] = []
    adapted: list[str] = []
    notes: list[str] = []
    if adapt and (mismatched or unexpected):
        state, reinit, adapted, notes = _adapt(model, state, mismatched, unexpected, what)
        mismatched = [m for m in mismatched if m[0] not in reinit and m[0] not in adapted]
        missing = [k for k in own if k not in state and k not in reinit]
        unexpected = [k for k in unexpected if k in state]
    if mismatched or (strict and (missing or unexpected)):
        raise WeightsMismatchError(missing, unexpected, mismatched, what)
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" (+{len(ignored) - 5} more)" if len(ignored) > 5 else "")
        notes.append(f"{what}: loaded the tensors under {prefix!r}; left out {len(ignored)} outside it: {shown}")
    if reinit and reinit[0] in own and hasattr(model, "reset_classifier"):
        model.reset_classifier(own[reinit[0]].shape[0])  # a fresh head, whatever the model held before
    model.load_state_dict(state, strict=False)  # every difference was checked above
    for note in notes:
        warnings.warn(note, WeightsAdaptedWarning, stacklevel=2)
    return {
        "missing": missing,
        "unexpected": unexpected,
        "mismatched": [k for k, _, _ in mismatched],
        "reinitialized": reinit,
        "adapted": adapted,
        "ignored": ignored,
    }


def _adapt(
    model: nn.Module,
    state: dict[str, Tensor],
    mismatched: list[tuple[str, tuple, tuple]],
    unexpected: list[str],
    what: str,
) -> tuple[dict[str, Tensor], list[str], list[str], list[str]]:
    """Leave out a classifier that differs only in the class count, adapt a stem that differs only in input channels.

    Returns the new state, the classifier keys left out (re-initialised, or dropped for a model without classifier:
    ``num_classes=0``, an ``nn.Identity`` head), the stem keys adapted and the notices.
    """
    shapes = {k: a for k, a, _ in mismatched}
    own = model.state_dict()
    reinit: list[str] = []
    adapted: list[str] = []
    notes: list[str] = []
    head = head_keys(model)
    classifier = getattr(model, "get_classifier", None)
    identity = classifier() if callable(classifier) and not head else None
    where = _module_name(model, identity) if isinstance(identity, nn.Identity) else None
    if where:  # the model has no classifier: the checkpoint's is left out
        reinit = [k for k in unexpected if k.startswith(f"{where}.")]
        state = {k: v for k, v in state.items() if k not in reinit}
        if reinit:
            notes.append(f"{what}: classifier {', '.join(reinit)} left out (the model has no classifier)")
    if head and any(k in shapes for k in head) and all(k in state for k in head):
        ckpt_classes = {state[k].shape[0] for k in head}
        if len(ckpt_classes) == 1 and all(
            state[k].dim() == own[k].dim() and state[k].shape[1:] == own[k].shape[1:] for k in head
        ):
            state = {k: v for k, v in state.items() if k not in head}
            reinit = head
            notes.append(
                f"{what}: classifier {', '.join(head)} re-initialised for {own[head[0]].shape[0]} classes "
                f"(the checkpoint has {ckpt_classes.pop()})"
            )
    stem = stem_key(model)
    if stem in shapes:
        state = adapt_state_dict(model, state)
        chans = state[stem].shape[1]
        if state[stem].shape != shapes[stem]:
            adapted = [stem]
            how = "summed" if chans == 1 else "tiled and rescaled"
            notes.append(f"{what}: stem {stem} adapted from {shapes[stem][1]} to {chans} input channels ({how})")
    return state, reinit, adapted, notes


def layout_hint(state: Mapping[str, Tensor], source: Any = None) -> str:
    """A hint for a checkpoint in another code base's layout that a key map loads: timm's or megvii's (else "")."""
    keys = {k.removeprefix("module.") for k in state}
    where = str(source) if isinstance(source, (str, PathLike)) else "<file>"
    if "conv_stem.weight" in keys:
        return f" (its keys are timm's: load it with weights='timm:<timm model>@{where}')"
    if "first_conv.0.weight" in keys:
        return f" (its keys are megvii's official ShuffleNet code's: load it with weights='megvii:{where}')"
    return ""
