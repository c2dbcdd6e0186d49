"""Per-layer complexity of a network: params, multiply-adds, other ops, memory access cost and activation memory.

One forward pass in ``eval()`` + ``torch.inference_mode()`` runs under a ``TorchDispatchMode`` that sees every aten op
and charges it to the innermost module being run (forward pre/post hooks keep a stack of module names). Ops a module
runs itself (a residual add, the SE multiply, a concat, a channel shuffle) are charged to that module, so its row holds
only its own work, and the rows sum to the totals exactly.

The counting conventions are in :mod:`mobilezoo.complexity.results` (and ``Profile.to_dict()["conventions"]``), the
op accounting in :mod:`mobilezoo.complexity.counting`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mobilezoo.complexity.counting import OTHER_OP_KINDS, OpCounter, Row, nbytes, tensors
from mobilezoo.complexity.results import LayerProfile, Profile


def _model_name(model: nn.Module) -> str:
    return str(getattr(model, "model_name", type(model).__name__))


def _in_chans(model: nn.Module) -> int:
    chans = getattr(model, "in_chans", None)
    if isinstance(chans, int):
        return chans
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f"cannot tell the input channels of {type(model).__name__}: give it an int attribute in_chans")


def _check_resolution(resolution: int | Sequence[int], min_size: int) -> tuple[int, int]:
    size = (resolution, resolution) if isinstance(resolution, int) else resolution
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise ValueError(f"resolution must be an int or an (H, W) pair of ints, got {resolution!r}")
    if min(size) < min_size:
        raise ValueError(f"resolution {resolution!r} is too small: this network needs at least {min_size}x{min_size}")
    return tuple(size)  # type: ignore[return-value]


def profile(
    model_or_name: nn.Module | str,
    *,
    resolution: int | Sequence[int] = 224,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    **model_kwargs: Any,
) -> Profile:
    """Profile one forward pass of a model (an ``nn.Module`` or a registered name built with ``model_kwargs``).

    ``resolution`` is an int or (H, W). A registered name is built on ``device``, by default ``meta``: every count here
    depends on shapes and dtypes only, so the meta device gives the same numbers (tested) without computing or
    allocating anything (VGG-16 is built and profiled in a blink). Pass ``device="cpu"`` to run it for real. A module
    runs where its parameters are, or is moved to ``device``. Its train/eval mode is restored afterwards.
    """
    from mobilezoo.registry import create_model

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(model_or_name, str):
        with torch.device(device if device is not None else "meta"):  # an argument the model does not take: ValueError
            model = create_model(model_or_name, **model_kwargs)
    elif isinstance(model_or_name, nn.Module):
        if model_kwargs:
            raise ValueError(f"model kwargs {sorted(model_kwargs)} only apply to a registered name, not a module")
        model = model_or_name
        if device is not None:
            model = model.to(device)
    else:
        raise ValueError(f"expected an nn.Module or a registered model name, got {type(model_or_name).__name__}")
    size = _check_resolution(resolution, getattr(model, "min_input_size", 1))
    first = next(iter(model.parameters()), None)
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    dev = first.device if first is not None else torch.device(device or "cpu")
    x = torch.randn(batch_size, _in_chans(model), *size, dtype=dtype, device=dev)

    names = {id(m): n for n, m in model.named_modules()}
    rows: dict[str, Row] = {n: Row() for n in names.values()}
    counter = OpCounter(rows)

    def pre_hook(module: nn.Module, inputs: Any) -> None:
        name = names[id(module)]
        row = rows[name]
        if row.calls == 0:
            ts = tensors(inputs)
            row.in_shape = tuple(ts[0].shape) if ts else None
        row.calls += 1
        counter.stack.append(name)

    def post_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        name = counter.stack.pop()
        row = rows[name]
        ts = tensors(output)
        if row.out_shape is None and ts:
            row.out_shape = tuple(ts[0].shape)
        row.out_bytes += sum(nbytes(t) for t in ts)

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook, always_call=True))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = x.clone()  # an inference tensor, tracked as live from the start
            counter.track(x)
            with counter:
                y = model(x)
        output_bytes = sum(nbytes(t) for t in tensors(y))
        del y
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
        for f in counter.finalizers:
            f.detach()

    owned: Counter[str] = Counter()
    param_bytes = 0
    for pname, p in model.named_parameters():
        owned[pname.rpartition(".")[0]] += p.numel()
        param_bytes += nbytes(p)
    modules = dict(model.named_modules())
    layers = []
    for name, row in rows.items():
        is_leaf = next(iter(modules[name].children()), None) is None
        if not (row.calls and (is_leaf or row.ops)) and not owned[name]:
            continue
        layers.append(
            LayerProfile(
                name=name,
                type=type(modules[name]).__name__,
                called=row.calls > 0,
                calls=row.calls,
                input_shape=row.in_shape,
                output_shape=row.out_shape,
                params=owned[name],
                madds=row.madds,
                other_ops=row.other,
                mac=row.mac,
                mac_bytes=row.mac_bytes,
                output_bytes=row.out_bytes,
                ops=tuple(row.ops),
            )
        )
    totals = counter.totals
    return Profile(
        model=_model_name(model),
        input_shape=(batch_size, x.shape[1], *size),  # type: ignore[arg-type]
        dtype=str(dtype).removeprefix("torch."),
        device=str(dev),
        params=sum(p.numel() for p in model.parameters()),
        params_not_called=sum(r.params for r in layers if not r.called),
        param_bytes=param_bytes,
        madds=totals["madds"],
        other_ops={k: totals[k] for k in OTHER_OP_KINDS},
        mac=totals["mac"],
        mac_bytes=totals["mac_bytes"],
        input_bytes=nbytes(x),
        output_bytes=output_bytes,
        peak_activation_bytes=counter.peak,
        layers=tuple(layers),
        op_counts=dict(counter.op_counts),
    )
