"""mobilezoo's fastest inference paths against what a user gets by exporting the same architecture plainly.

For each model and batch size, one process prepares

- **ours**: the backends ``mobilezoo bench --backend auto --precision any`` chooses from (ONNX Runtime fp32 and int8,
  their ``-streams`` forms at batch > 1, OpenVINO f32, bf16 where the CPU has it, and int8 from the same calibrated
  model), through mobilezoo's export and this machine's policies (``mobilezoo tune`` first: ONNX Runtime's spinning
  and the float stem per runtime are measured ones);
- **peers**: torchvision's same architecture (mobilezoo's own module where torchvision has none: MobileNetV1,
  ShuffleNet V1) exported with a plain ``torch.onnx.export`` and run by ONNX Runtime with its default session options,
  by OpenVINO in f32, by OpenVINO with its default settings (bf16 on a CPU with AVX-512 BF16 or AMX: not exact), and by
  OpenVINO running ONNX Runtime's plain int8 QDQ model (``quantize_static`` defaults, calibrated on the same inputs);

then times all of them interleaved: ``rounds`` rounds, each a block of calls per candidate in rotating order, with a
short pause after each block so that a session's spinning threads (ONNX Runtime's default) idle out before the next
candidate is timed. A cell's figure is the median of its per-round medians; the spread is the range of those.

    .venv/bin/python benchmarks/peers.py                 # writes results/peers.json and results/peers.md
    .venv/bin/python benchmarks/peers.py --models mobilenet_v3_small --batches 1 --rounds 3 --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from mobilezoo import create_model, model_card
from mobilezoo.benchmark.auto import default_backends
from mobilezoo.benchmark.backends import precision, prepare, shared_exports
from mobilezoo.benchmark.environment import environment
from mobilezoo.machine import cpu_info
from mobilezoo.policies import current, measure_choice

MODELS = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "shufflenet_v2_x1_0",
    "shufflenet_v1_g3_x1_0",
)
PEER_PRECISION = {"peer:onnxruntime": "fp32", "peer:openvino-f32": "fp32", "peer:openvino-default": "bf16",
                  "peer:openvino-int8": "int8"}  # fmt: skip


def peer_module(name: str) -> tuple[torch.nn.Module, str]:
    """torchvision's same architecture, else mobilezoo's module; and which one it is."""
    import torchvision

    ref = model_card(name).torchvision
    if ref is None:
        return create_model(name).eval(), f"mobilezoo {name} (torchvision has no {model_card(name).family})"
    return getattr(torchvision.models, ref.builder)(**ref.builder_kwargs).eval(), f"torchvision {ref.builder}"


def peer_runs(
    module: torch.nn.Module, x: np.ndarray, threads: int, tmp: Path, calib: list[np.ndarray], notes: dict
) -> dict:
    """The peer paths: a plain export, its default ONNX Runtime session, OpenVINO f32 / default, OpenVINO on plain QDQ."""
    import onnxruntime as ort
    import openvino as ov
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    path = tmp / "peer.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.from_numpy(x[:1]), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(list(calib))

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"x": b}

    core = ov.Core()

    def compiled(p: Path, cfg: dict):
        req = core.compile_model(core.read_model(str(p)), "CPU", cfg).create_infer_request()
        return lambda: req.infer({0: x})

    base = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    runs = {
        "peer:onnxruntime": lambda: session.run(None, {"x": x}),
        "peer:openvino-f32": compiled(path, {**base, "INFERENCE_PRECISION_HINT": "f32"}),
        "peer:openvino-default": compiled(path, {"INFERENCE_NUM_THREADS": threads}),
    }
    # ONNX Runtime's plain QDQ (its defaults: int8 activations and weights); OpenVINO 2026.4 compiles none of these
    # nets' int8-activation graphs ("No suitable implementations"), so the peer falls back to uint8 activations
    for label, kw in (("defaults", {}), ("uint8 activations", {"activation_type": QuantType.QUInt8})):
        qpath = tmp / f"peer.int8.{len(label)}.onnx"
        quantize_static(str(path), str(qpath), Reader(), quant_format=QuantFormat.QDQ, **kw)
        try:
            run = compiled(qpath, base)
            run()
        except RuntimeError as e:
            print(f"  peer openvino-int8 ({label}) failed: {str(e).splitlines()[-3][:150]}", file=sys.stderr)
            continue
        runs["peer:openvino-int8"] = run
        notes["peer:openvino-int8"] = f"ONNX Runtime quantize_static QDQ, {label}"
        break
    return runs


def measure_cell(name: str, batch: int, threads: int, rounds: int) -> dict:
    x_t = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    x = x_t.numpy()
    calib = [torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(i)).numpy() for i in range(4)]
    ours_backends = [b for b in default_backends("any") if b not in ("eager", "channels_last", "torchscript")]
    if batch == 1:  # a batch of 1 cannot be split: the -streams forms are the plain ones
        ours_backends = [b for b in ours_backends if not b.endswith("-streams")]
    model = create_model(name).eval()
    runs, errors, notes, prepared = {}, {}, {}, []
    with tempfile.TemporaryDirectory() as tmp, shared_exports(), torch.inference_mode():
        for b in ours_backends:
            try:
                p = prepare(model, b, x_t, threads=threads, spin=None)  # this machine's policy: timed in blocks
                prepared.append(p)
                p.run()
                runs[f"ours:{b}"] = p.run
                notes[f"ours:{b}"] = p.notes
            except (RuntimeError, ValueError) as e:
                errors[f"ours:{b}"] = str(e).splitlines()[0][:200]
        peer, peer_what = peer_module(name)
        runs |= peer_runs(peer, x, threads, Path(tmp), calib, notes)
        for fn in runs.values():  # warm-up
            for _ in range(3):
                fn()
        calls = 20 if batch == 1 else 3
        choice = measure_choice(runs, calls=calls, warmup=1, min_rounds=rounds, max_rounds=rounds, pause_s=0.1)
        for p in prepared:
            p.cleanup()
    cands = {}
    for k, per_round in choice.per_round_ms.items():
        prec = precision(k.split(":", 1)[1]) if k.startswith("ours:") else PEER_PRECISION[k]
        med = statistics.median(per_round)
        cands[k] = {"precision": prec, "median_ms": med, "round_min_ms": min(per_round),
                    "round_max_ms": max(per_round), "spread": (max(per_round) - min(per_round)) / med,
                    "round_medians_ms": per_round, "notes": notes.get(k, "")}  # fmt: skip

    def best(owner: str, exact: bool) -> tuple[str, float]:
        pool = {k: v for k, v in cands.items() if k.startswith(owner) and (not exact or v["precision"] == "fp32")}
        k = min(pool, key=lambda k: pool[k]["median_ms"])
        return k, pool[k]["median_ms"]

    ours_any, peer_any = best("ours:", False), best("peer:", False)
    ours_exact, peer_exact = best("ours:", True), best("peer:", True)

    def per_round(peer: str, ours: str) -> list[float]:
        """The peer's time / ours in each round: the two were timed minutes apart at most, under the same load."""
        return [p / o for p, o in zip(cands[peer]["round_medians_ms"], cands[ours]["round_medians_ms"])]

    return {
        "model": name,
        "batch_size": batch,
        "threads": threads,
        "peer_model": peer_what,
        "candidates": cands,
        "errors": errors,
        "ours_fastest": {"path": ours_any[0], "median_ms": ours_any[1], "precision": cands[ours_any[0]]["precision"]},
        "peer_fastest": {"path": peer_any[0], "median_ms": peer_any[1], "precision": cands[peer_any[0]]["precision"]},
        "ours_fastest_exact": {"path": ours_exact[0], "median_ms": ours_exact[1]},
        "peer_fastest_exact": {"path": peer_exact[0], "median_ms": peer_exact[1]},
        "speedup": peer_any[1] / ours_any[1],
        "speedup_exact": peer_exact[1] / ours_exact[1],
        "speedup_per_round": per_round(peer_any[0], ours_any[0]),
        "speedup_exact_per_round": per_round(peer_exact[0], ours_exact[0]),
        "rounds": choice.rounds,
    }


ATTEMPT_KEYS = ("speedup", "speedup_exact", "ours_fastest", "peer_fastest", "load_average_1m")


def spread(cell: dict) -> float:
    """The largest spread of the four compared paths (ours and the peer's fastest, any precision and exact)."""
    paths = [cell[k]["path"] for k in ("ours_fastest", "peer_fastest", "ours_fastest_exact", "peer_fastest_exact")]
    return max(cell["candidates"][p]["spread"] for p in paths)


def machine_slug() -> str:
    """``amd_avx512_vnni``, ``intel_amx_int8``, ``amd_avx2``...: the CPU kind a results file was measured on."""
    cpu = cpu_info()
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(cpu.vendor, cpu.vendor.lower() or "cpu")
    return f"{vendor}_{cpu.int8_dot or ('avx2' if 'avx2' in cpu.features else 'noavx2')}"


def write_markdown(data: dict, path: Path) -> None:
    env = data["environment"]
    lines = [
        "# mobilezoo's fastest path vs the same architecture exported plainly",
        "",
        f"Written by `benchmarks/peers.py` from `{path.with_suffix('.json').name}`. Machine: {env['cpu_summary']}, "
        f"{env['usable_cpus']} cpus; torch {env['torch']}, onnxruntime {env['onnxruntime']}, openvino "
        f"{env['openvino']}; {data['threads']} threads, 224x224, random weights. All paths of a row were timed "
        f"interleaved in one process ({data['rounds']} rounds of blocks); figures are medians of per-round medians, "
        "and *spread* is (max - min) / median of the per-round medians of the four compared paths (the largest). A "
        f"cell whose spread exceeded {data['max_spread']} was measured again (up to {data['retries']} more times; "
        "the least disturbed attempt is shown, every attempt is in the JSON) and is marked *disturbed* if it stayed "
        "above.",
        "",
        "Speed-up = the peer's fastest / mobilezoo's fastest (above 1: mobilezoo faster); *per round* gives the range "
        "of that ratio over the rounds (each round times both within seconds, under the same load). *Any precision*: "
        "int8 and bf16 allowed (labelled); *exact*: fp32 paths only.",
        "",
        "| model | batch | fastest peer, ms (path) | mobilezoo fastest, ms (path) | speed-up | per round | spread | "
        "fastest exact peer, ms | mobilezoo fastest exact, ms | exact speed-up | per round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def span(ratios: list[float]) -> str:
        return f"{min(ratios):.2f}-{max(ratios):.2f}"

    for c in data["cells"]:
        o, p, oe, pe = c["ours_fastest"], c["peer_fastest"], c["ours_fastest_exact"], c["peer_fastest_exact"]
        lines.append(
            f"| {c['model']} | {c['batch_size']} | {p['median_ms']:.2f} ({p['path'][5:]}, {p['precision']}) | "
            f"{o['median_ms']:.2f} ({o['path'][5:]}, {o['precision']}) | **{c['speedup']:.2f}** | "
            f"{span(c['speedup_per_round'])} | {spread(c):.2f}{' (disturbed)' if c['disturbed'] else ''} | "
            f"{pe['median_ms']:.2f} ({pe['path'][5:]}) | "
            f"{oe['median_ms']:.2f} ({oe['path'][5:]}) | **{c['speedup_exact']:.2f}** | "
            f"{span(c['speedup_exact_per_round'])} |"
        )
    lines += ["", "## Every path, ms (median of round medians)", ""]
    names = sorted({k for c in data["cells"] for k in c["candidates"]})
    lines.append("| model | batch | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for c in data["cells"]:
        cells = [f"{c['candidates'][n]['median_ms']:.2f}" if n in c["candidates"] else "-" for n in names]
        lines.append(f"| {c['model']} | {c['batch_size']} | " + " | ".join(cells) + " |")
    errs = [(c["model"], c["batch_size"], k, e) for c in data["cells"] for k, e in c["errors"].items()]
    if errs:
        lines += ["", "Paths that failed:", ""] + [f"- {m} batch {b}, {k}: {e}" for m, b, k, e in errs]
    lines += ["", "Policies in force:", ""] + [f"- {d['policy']} = {d['value']} ({d['how']})" for d in data["policies"]]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--max-spread", type=float, default=0.25,
                    help="a cell whose compared paths' per-round medians spread more than this was disturbed: "
                         "measured again (the least disturbed attempt is kept, and marked if still above)")  # fmt: skip
    ap.add_argument("--retries", type=int, default=2, help="re-measurements of a disturbed cell")
    ap.add_argument("--out", default=None, help="default: results/peers_<cpu vendor>_<int8 feature>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = environment()
    env["cpu_summary"] = cpu_info().summary()
    env["cpu_features"] = cpu_info().to_dict()
    cells = []
    for name in args.models:
        for b in args.batches:
            attempts = []
            while len(attempts) <= args.retries:
                print(f"{name} batch {b} (attempt {len(attempts) + 1})", file=sys.stderr, flush=True)
                cell = measure_cell(name, b, args.threads, args.rounds)
                cell["load_average_1m"] = os.getloadavg()[0]
                attempts.append(cell)
                print(f"  ours {cell['ours_fastest']} peer {cell['peer_fastest']} x{cell['speedup']:.2f} "
                      f"exact x{cell['speedup_exact']:.2f} spread {spread(cell):.2f}", file=sys.stderr, flush=True)  # fmt: skip
                if spread(cell) <= args.max_spread:
                    break
            cell = min(attempts, key=spread)  # the least disturbed attempt; all of them are kept
            cell["disturbed"] = spread(cell) > args.max_spread
            cell["attempts"] = [{k: a[k] for k in ATTEMPT_KEYS} | {"spread": spread(a)} for a in attempts]
            cells.append(cell)
    data = {"environment": env, "threads": args.threads, "rounds": args.rounds, "max_spread": args.max_spread,
            "retries": args.retries, "cells": cells, "policies": [d.to_dict() for d in current()]}  # fmt: skip
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"peers_{machine_slug()}.json"
    out.write_text(json.dumps(data, indent=1) + "\n")
    write_markdown(data, out.with_suffix(".md"))
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
