"""The training loop: one function, :func:`train`, for single-process and torchrun (DDP) runs, fresh or resumed.

Determinism: the epoch's sample order is ``randperm`` under ``(seed, epoch)``, each sample's augmentation is seeded by
``(seed, epoch, index)`` (:class:`mobilezoo.data.SeededDataset`), and the RNG state that remains (dropout) is saved in
every checkpoint. A run killed mid-epoch and resumed from its last checkpoint therefore ends with the same weights as
one never interrupted (exactly, on CPU).

Short runs and lagging BatchNorm statistics: with BN momentum 0.01 (TF decay 0.99, MobileNetV3) the running
statistics still hold much of their initial (0, 1) after a few hundred steps, and a small data set's eval accuracy
sits near chance for epochs. Before every evaluation a copy of the model gets its BN statistics re-estimated as the
plain average over ``bn_recalibrate`` training batches (eval transforms, megvii's ShuffleNet "bnps" step); training
itself keeps the recipe's BN momentum. ``bn_momentum`` overrides the model's momentum instead, if preferred.

Batches: an epoch is ``len(train) // batch_size`` full batches; the images that do not fill a last batch are left out
of that epoch (drop-last; different ones each epoch, as the order is reshuffled), so BatchNorm never trains on a
remainder of one image. BN re-estimation likewise uses full batches only. Evaluation takes every image.

Garbage is refused, not saved (:mod:`mobilezoo.train.guards`): a NaN/infinite loss or weight stops the run with a
:class:`~mobilezoo.train.guards.TrainingDivergedError` before anything of that step is written.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mobilezoo.data import collate_skipping
from mobilezoo.train import checkpoint as ckpt
from mobilezoo.train.config import TrainConfig, resolve_config
from mobilezoo.train.config_io import check_resume, save_config
from mobilezoo.train.distributed import DistInfo, all_reduce_sum, broadcast_object, setup
from mobilezoo.train.ema import ModelEma
from mobilezoo.train.evaluate import EvalResult, InferenceSpec, evaluate, recalibrate_bn
from mobilezoo.train.guards import (
    check_micro_batch,
    diverged_error,
    forward_checked,
    nonfinite_loss_report,
    nonfinite_report,
)
from mobilezoo.train.optim import build_optimizer, lr_factor
from mobilezoo.train.results import ProgressEvent, TrainResult
from mobilezoo.train.run_data import RunData, epoch_batches
from mobilezoo.train.speed import choose_channels_last, freed_memory_kept, keep_freed_memory


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    name = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
        return torch.device("cuda", info.local_rank if info.enabled else torch.device(name).index or 0)
    return torch.device("cpu")


def _channels_last(cfg: TrainConfig, model: nn.Module, device: torch.device, info: DistInfo) -> bool:
    """Whether to train in channels_last: ``cfg.channels_last`` on CUDA; on CPU (unless turned off) measured by the
    main process alone (processes timing on the same cores would disturb each other) and sent to the others."""
    if not cfg.channels_last:
        return False
    if device.type == "cuda":
        return True
    decision = None
    if info.is_main:
        micro_batch = cfg.batch_size // (cfg.accum_steps * info.world_size)
        decision = bool(
            choose_channels_last(model, micro_batch, cfg.in_chans, cfg.img_size, device, key=cfg.model).value
        )
    return bool(broadcast_object(decision, info))


def _set_bn_momentum(model: nn.Module, momentum: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.recipe``; files go to ``cfg.out`` (nothing is written if None).

    With ``resume=True`` the run in ``cfg.out`` continues from its last checkpoint (its config must match). Launched
    by ``torchrun`` the run is data-parallel. Everything is checked (data, model, weights, config) before the first
    file is written. Returns a :class:`TrainResult` whose ``model`` is the evaluated model (EMA if used), on CPU.
    """
    t_start = time.perf_counter()
    cfg = resolve_config(cfg)
    run_dir = Path(cfg.out) if cfg.out else None
    if resume:
        if run_dir is None or not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"nothing to resume: {cfg.out!r} holds no run (config.yaml)")
        check_resume(cfg, run_dir)
    elif run_dir is not None and (run_dir / ckpt.POINTER).exists():
        raise ValueError(f"{str(run_dir)!r} already holds a run: pass resume=True (--resume) or choose another out")
    if cfg.batch_size % cfg.accum_steps:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by accum_steps {cfg.accum_steps}")

    info = setup(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.batch_size % (cfg.accum_steps * info.world_size):
        raise ValueError(
            f"batch_size {cfg.batch_size} is not divisible by accum_steps x processes "
            f"({cfg.accum_steps} x {info.world_size})"
        )
    device = _device(cfg, info)
    seed_everything(cfg.seed + info.rank)  # ranks draw different dropout masks; augmentations are per-sample seeded
    data = RunData(cfg)

    from mobilezoo.registry import create_model

    kwargs: dict[str, Any] = {} if cfg.drop_rate is None else {"drop_rate": cfg.drop_rate}
    model = create_model(cfg.model, num_classes=len(data.classes), in_chans=cfg.in_chans, weights=cfg.weights, **kwargs)
    check_micro_batch(model, cfg.model, cfg.batch_size, cfg.accum_steps, info.world_size)
    if cfg.bn_momentum is not None:
        _set_bn_momentum(model, cfg.bn_momentum)
    spec = InferenceSpec(data.classes, cfg.in_chans, cfg.img_size, cfg.eval_crop_pct, data.norm)
    meta = {**spec.to_metadata(), "recipe": cfg.recipe}
    cuda = device.type == "cuda"
    # channels_last where it is faster: on CUDA always; on CPU as measured here (it is 1.3x faster on one CPU and
    # slower on another; see mobilezoo.train.speed). A resumed run keeps the layout it was started with (below).
    has_checkpoint = resume and run_dir is not None and (run_dir / ckpt.POINTER).is_file()
    if device.type == "cpu" and cfg.keep_freed_memory:
        keep_freed_memory()  # each step reuses the last one's memory (process-wide; see mobilezoo.train.speed)
    channels_last = _channels_last(cfg, model, device, info) if not has_checkpoint else cfg.channels_last and cuda
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = cfg.amp and cuda
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    spe = len(data.train_idx) // cfg.batch_size
    total = spe * cfg.epochs
    step, history, best, skipped_total = 0, [], {"top1": -1.0, "epoch": 0}, 0
    acc = {"loss": 0.0, "correct": 0.0, "count": 0.0, "skipped": 0.0, "time": 0.0}
    if resume:
        state = ckpt.load_checkpoint(run_dir, model)  # type: ignore[arg-type]
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            if ema is not None:
                ema.module.load_state_dict(state["ema"])
            scaler.load_state_dict(state["scaler"])
            ckpt.set_rng_state(state["rng"])
            step, history, best = state["step"], state["history"], state["best"]
            skipped_total, acc = state["skipped"], state["epoch_acc"]
            # the same layout, so the same numerics, as the first part (runs from before the choice: the old rule)
            saved = bool(state.get("channels_last", cfg.channels_last and cuda))
            if saved != channels_last:
                channels_last = saved
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                for m in (model, ema.module if ema is not None else None):
                    if m is not None:
                        m.to(memory_format=fmt)
    if run_dir is not None and info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            save_config(cfg, run_dir / "config.yaml")

    net: nn.Module = model
    if info.enabled:
        if cuda:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if cuda else None)

    def state_now() -> dict[str, Any]:
        return {
            "optimizer": optimizer.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "history": history,
            "best": best,
            "skipped": skipped_total,
            "epoch_acc": acc,
            "channels_last": channels_last,
        }

    def loader(dataset: Any, batch_sampler: Any, collate: Callable[..., Any] = collate_skipping) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate,
            pin_memory=cuda,
            # its own generator: otherwise every new iterator draws its worker seed from the global RNG, which
            # would shift dropout's stream between an uninterrupted and a resumed run
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    def stop_if(what: str | None, where: str, lr: float) -> None:
        """Raise TrainingDivergedError on every rank if ``what`` (a non-finite loss or weight) is set on any."""
        if info.enabled:  # all ranks stop together instead of hanging in the next collective
            flag = all_reduce_sum(torch.tensor([float(what is not None)], device=device if cuda else "cpu"), info)
            what = what or ("another process's loss or weights are NaN or infinite" if float(flag) else None)
        if what is not None:
            raise diverged_error(where, what, lr)

    def eval_batches(ds: Any, count: int | None) -> Any:
        if count is None:  # evaluation: every rank its shard
            idx = list(range(len(ds)))[info.rank :: info.world_size]
        else:  # recalibration: a fixed random sample (data sets are often sorted by class), the same on every rank
            # full batches only: the cumulative average weights every batch alike, and a remainder of one image
            # would give BatchNorm the statistics of one image (and fail at 1x1 feature maps)
            g = torch.Generator().manual_seed(cfg.seed)
            n = min(count, len(ds) // cfg.batch_size) * cfg.batch_size
            idx = torch.randperm(len(ds), generator=g)[:n].tolist()
        chunks = [idx[i : i + cfg.batch_size] for i in range(0, len(idx), cfg.batch_size)]
        return loader(ds, chunks)

    def trained() -> list[tuple[str, nn.Module | None]]:
        return [("model", model), ("EMA model", ema.module if ema is not None else None)]

    last_eval: EvalResult | None = None
    eval_model: nn.Module = model
    window: list[tuple[float, int]] = []
    for epoch in range(step // spe, cfg.epochs):
        net.train()
        start = step - epoch * spe
        order = list(epoch_batches(len(data.train_idx), epoch, cfg, info, start))
        batches = loader(data.train, order, data.train_collate)  # the digits: augmented a batch at once
        it = iter(batches)
        for _ in range(start, spe):
            t0 = time.perf_counter()
            lr = cfg.lr * lr_factor(step, spe, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            seen, losses = 0, []
            for j in range(cfg.accum_steps):
                x, y, skipped = next(it)
                acc["skipped"] += skipped
                if y.numel() == 0:
                    continue
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                sync = not info.enabled or j == cfg.accum_steps - 1
                ctx = net.no_sync() if not sync else contextlib.nullcontext()  # type: ignore[operator]
                with ctx, torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = forward_checked(net, x, cfg.img_size, skipped)
                    loss = criterion(logits.float(), y)
                scaler.scale(loss / cfg.accum_steps).backward()
                losses.append(float(loss.detach()))
                acc["loss"] += losses[-1] * y.numel()
                acc["correct"] += float((logits.detach().argmax(1) == y).sum())
                acc["count"] += y.numel()
                seen += y.numel()
            # before the optimizer step: the weights stay those of the last good step
            stop_if(nonfinite_loss_report(losses), f"at epoch {epoch + 1}, step {step + 1}", lr)
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model, step)
            step += 1
            dt = time.perf_counter() - t0
            acc["time"] += dt
            window = [*window[-19:], (dt, seen * info.world_size)]
            if progress is not None and info.is_main:
                ips = sum(n for _, n in window) / max(sum(t for t, _ in window), 1e-9)
                eta = (total - step) * sum(t for t, _ in window) / len(window)
                step_loss = sum(losses) / len(losses) if losses else math.nan  # nan: every image undecodable
                progress(ProgressEvent("step", epoch + 1, cfg.epochs, step, total, step_loss, lr, ips, eta))
            if on_step is not None:
                on_step(step)
            # mid-epoch checkpoints on request; the end of an epoch always writes one below
            every = cfg.checkpoint_every
            if run_dir is not None and every and step % every == 0 and step % spe != 0:
                stop_if(nonfinite_report(trained()), f"at epoch {epoch + 1}, step {step}", lr)  # on every rank
                if info.is_main:
                    ckpt.save_checkpoint(run_dir, step, model, state_now())

        # end of epoch: reduce the training sums, evaluate, record, checkpoint
        sums = all_reduce_sum(
            torch.tensor([acc["loss"], acc["correct"], acc["count"], acc["skipped"]], dtype=torch.float64), info
        )
        if sums[2] == 0:  # every image of the epoch failed to decode (counts survive a resume mid-epoch)
            raise ValueError(
                f"epoch {epoch + 1} trained on no image: all {int(sums[3])} images drawn were undecodable "
                f"(see the warnings)"
            )
        where, lr_now = f"by the end of epoch {epoch + 1} (step {step})", cfg.lr * lr_factor(step - 1, spe, cfg)
        stop_if(nonfinite_report(trained()), where, lr_now)
        eval_model = copy.deepcopy(ema.module if ema is not None else model)
        recal = 0
        if cfg.bn_recalibrate:
            recal = recalibrate_bn(eval_model, eval_batches(data.recal, cfg.bn_recalibrate), device)
            stop_if(nonfinite_report([("model after BN re-estimation", eval_model)]), where, lr_now)
        last_eval = evaluate(
            eval_model, eval_batches(data.val, None), data.classes, device, info, use_amp, channels_last
        )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr_now,
            "train_loss": float(sums[0] / max(sums[2], 1)),
            "train_top1": float(100 * sums[1] / max(sums[2], 1)),
            "val_loss": last_eval.loss,
            "val_top1": last_eval.top1,
            "val_top5": last_eval.top5,
            "evaluated": "ema" if ema is not None else "model",
            "bn_recalibrated_images": recal,
            "train_images_per_s": float(sums[2] / max(acc["time"], 1e-9)) if acc["time"] else None,
            "memory_format": "channels_last" if channels_last else "contiguous",
            "freed_memory_kept": freed_memory_kept(),
            "skipped_images": int(sums[3]),
        }
        skipped_total += int(sums[3])
        history.append(record)
        acc = {"loss": 0.0, "correct": 0.0, "count": 0.0, "skipped": 0.0, "time": 0.0}
        is_best = last_eval.top1 > best["top1"]
        if is_best:
            best = {"top1": last_eval.top1, "epoch": epoch + 1}
        if run_dir is not None and info.is_main:
            if is_best:
                ckpt.atomic_save_weights(eval_model, run_dir / "best.safetensors", {**meta, "epoch": str(epoch + 1)})
            ckpt.atomic_save_weights(eval_model, run_dir / "last.safetensors", {**meta, "epoch": str(epoch + 1)})
            ckpt.write_metrics(run_dir, history)
            ckpt.save_checkpoint(run_dir, step, model, state_now())
        if progress is not None and info.is_main:
            progress(
                ProgressEvent(
                    "epoch",
                    epoch + 1,
                    cfg.epochs,
                    step,
                    total,
                    record["train_loss"],
                    record["lr"],
                    record["train_images_per_s"] or 0.0,
                    0.0,
                    record,
                )
            )

    if last_eval is None:  # resumed a finished run: evaluate what it ended with
        eval_model = copy.deepcopy(ema.module if ema is not None else model)
        if cfg.bn_recalibrate:
            recalibrate_bn(eval_model, eval_batches(data.recal, cfg.bn_recalibrate), device)
        last_eval = evaluate(
            eval_model, eval_batches(data.val, None), data.classes, device, info, use_amp, channels_last
        )
    return TrainResult(
        config=cfg,
        run_dir=str(run_dir) if run_dir else None,
        best_top1=best["top1"],
        best_epoch=best["epoch"],
        last=history[-1] if history else {},
        history=history,
        wall_s=time.perf_counter() - t_start,
        steps=step,
        skipped_images=skipped_total,
        model=eval_model.cpu().eval(),
        final_eval=last_eval,
    )


__all__ = ["seed_everything", "train"]
