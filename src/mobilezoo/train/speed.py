"""The training step's memory format, chosen by measuring it on the machine at hand.

channels_last is not faster everywhere on CPU: on an Intel Xeon with AVX-512 and AMX a MobileNetV3-Small training step
(batch 32, 224 px) ran 1.29x faster in channels_last than in NCHW, while on an AMD EPYC (AVX2) channels_last inference
was 3-4x slower at 1 thread. :func:`choose_channels_last` times a few real steps of both layouts, interleaved, on a
copy of the model, and caches the answer per machine, model and input (``mobilezoo.policies``). On CUDA channels_last
is used without measuring (its convolutions are NHWC-native).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from mobilezoo.policies import Decision, MeasuredChoice, cached, measure_choice, store

_ASKED: dict[str, Decision] = {}


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the copy's weights stay what they were

    def run() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def choose_channels_last(
    model: nn.Module,
    batch_size: int,
    in_chans: int,
    img_size: int,
    device: torch.device,
    *,
    key: str | None = None,
    measure: Callable[..., MeasuredChoice] = measure_choice,
) -> Decision:
    """Whether a training step of ``model`` runs faster in channels_last than in NCHW here (a :class:`Decision`).

    ``key`` (e.g. the registered model name) enables the cache: the same question on the same machine and versions
    is answered from it. The measurement runs forward, backward and an optimizer step at the real batch size on a
    copy of ``model`` in train mode (BN statistics of the original are untouched), 2 calls per layout per round.
    """
    if device.type == "cuda":
        return Decision("train_channels_last", True, "default", "CUDA convolutions are NHWC-native")
    item = f"{key}|batch={batch_size}|in_chans={in_chans}|size={img_size}|threads={torch.get_num_threads()}"
    if key and item in _ASKED:  # one process gives one answer, measured or not (runs compared in it stay comparable)
        return _ASKED[item]
    hit = cached("train_channels_last", item) if key else None
    if hit is not None:
        return _ASKED.setdefault(item, Decision(**hit))
    num_classes = getattr(model, "num_classes", 10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, in_chans, img_size, img_size, generator=gen)
    y = torch.randint(0, max(1, num_classes), (batch_size,), generator=gen)
    nchw = copy.deepcopy(model).to(device).train()
    nhwc = copy.deepcopy(model).to(device, memory_format=torch.channels_last).train()
    runs = {
        "contiguous": _step(nchw, x.to(device), y.to(device)),
        "channels_last": _step(nhwc, x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)),
    }
    choice = measure(runs, calls=2, warmup=1, min_rounds=2, max_rounds=4, tie_margin=0.02)
    ratio = choice.ratios["contiguous"] / choice.ratios["channels_last"]
    decision = Decision(
        "train_channels_last",
        choice.best == "channels_last",
        "measured",
        f"training step, batch {batch_size}, {img_size} px: NCHW {choice.medians_ms['contiguous']:.1f} ms, "
        f"channels_last {choice.medians_ms['channels_last']:.1f} ms (NCHW / channels_last {ratio:.2f})"
        + ("" if choice.stable else "; not stable against the machine's noise"),
        choice.to_dict(),
    )
    if key:
        _ASKED[item] = decision
        if choice.stable:
            store("train_channels_last", item, decision.to_dict())
    return decision
