"""mobilezoo's fastest inference paths against what a user gets by exporting the same architecture plainly.

For each model and batch size, one process prepares

- **ours**: the backends ``mobilezoo bench --backend auto --precision any`` chooses from (ONNX Runtime fp32 and int8,
  their ``-streams`` forms at batch > 1, OpenVINO f32, bf16 where the CPU has it, and int8 from the same calibrated
  model), through mobilezoo's export and this machine's policies (ONNX Runtime's spinning and the float stem per
  runtime: where ``mobilezoo tune`` has not measured them here, this script runs it first);
- **peers**: torchvision's same architecture (mobilezoo's own module where torchvision has none: MobileNetV1,
  ShuffleNet V1) exported with a plain ``torch.onnx.export`` (its defaults: the input's fixed shape, which lets
  OpenVINO compile static-shape kernels too) and run by ONNX Runtime with its default session options,
  by OpenVINO in f32, by OpenVINO with its default settings (bf16 on a CPU with AVX-512 BF16 or AMX: not exact), and by
  OpenVINO running ONNX Runtime's plain int8 QDQ model (``quantize_static`` defaults, calibrated on the same inputs);

then times all of them interleaved: ``rounds`` rounds, each a block of calls per candidate in rotating order, with a
short pause after each block so that a session's spinning threads (ONNX Runtime's default) idle out before the next
candidate is timed. A path's figure is the median of its per-round medians. That ranks each side's paths, any
precision and exact; the runners-up within 10% of the first play it off head to head (half the rounds below), and
the winner is that side's fastest. Each pair (ours against the peer's) is then timed head to head
(:func:`mobilezoo.policies.measure_pair`: ``--pair-rounds`` rounds of adjacent blocks), and the speed-up is the median
of those paired ratios, with a sign test's verdict (faster, tie or slower). On this project's shared machines one
path's per-round medians range 1.5-2x; the ratio of adjacent blocks stays within about 10%.

    .venv/bin/python benchmarks/peers.py                 # writes results/peers_<cpu kind>.json and .md
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
from mobilezoo.benchmark.tune import tune
from mobilezoo.machine import cpu_info
from mobilezoo.policies import current, measure_choice, measure_pair

MODELS = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "shufflenet_v2_x1_0",
    "shufflenet_v1_g3_x1_0",
)
FASTEST_KEYS = (("ours:", False), ("peer:", False), ("ours:", True), ("peer:", True))  # (side, exact only)
FINALISTS = 3  # each side's fastest paths (by round medians) that may play off head to head for "fastest"
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
        torch.onnx.export(module, torch.from_numpy(x), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    class Reader(CalibrationDataReader):  # the calibration images in batches of the export's fixed batch size
        def __init__(self) -> None:
            images = np.concatenate(calib)
            self.it = iter([images[i : i + len(x)] for i in range(0, len(images) - len(x) + 1, len(x))])

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


def measure_cell(name: str, batch: int, threads: int, rounds: int, pair_rounds: int) -> dict:
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
        pair_calls = 10 if batch == 1 else 2

        def pair(a: str, b: str, rounds: int):
            return measure_pair((a, runs[a]), (b, runs[b]), rounds=rounds, calls=pair_calls, pause_s=0.1)

        fastest, knockouts = {}, []
        for owner, exact in FASTEST_KEYS:
            pool = [k for k in runs if k.startswith(owner) and (not exact or precision_of(k) == "fp32")]
            pool.sort(key=lambda k: statistics.median(choice.per_round_ms[k]))
            best = pool[0]
            # the round medians rank paths within 10% of each other by chance: the closest ones play off head to head
            for k in pool[1:FINALISTS]:
                if statistics.median(choice.per_round_ms[k]) <= 1.1 * statistics.median(choice.per_round_ms[best]):
                    match = pair(k, best, pair_rounds // 2)
                    knockouts.append(match.to_dict())
                    best = k if match.median > 1 else best
            fastest[owner, exact] = best
        pairs = {}
        for exact in (False, True):
            ours, peer = fastest["ours:", exact], fastest["peer:", exact]
            if (ours, peer) not in pairs:
                pairs[ours, peer] = pair(ours, peer, pair_rounds)
        for p in prepared:
            p.cleanup()
    cands = {}
    for k, per_round in choice.per_round_ms.items():
        med = statistics.median(per_round)
        cands[k] = {"precision": precision_of(k), "median_ms": med, "round_min_ms": min(per_round),
                    "round_max_ms": max(per_round), "spread": (max(per_round) - min(per_round)) / med,
                    "round_medians_ms": per_round, "notes": notes.get(k, "")}  # fmt: skip

    ours_any, peer_any, ours_exact, peer_exact = (
        (k, cands[k]["median_ms"]) for k in (fastest[side] for side in FASTEST_KEYS)
    )
    pair_any, pair_exact = pairs[ours_any[0], peer_any[0]], pairs[ours_exact[0], peer_exact[0]]

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
        "speedup": pair_any.median,
        "speedup_exact": pair_exact.median,
        "head_to_head": pair_any.to_dict(),
        "head_to_head_exact": pair_exact.to_dict(),
        "speedup_from_round_medians": peer_any[1] / ours_any[1],
        "speedup_exact_from_round_medians": peer_exact[1] / ours_exact[1],
        "knockouts": knockouts,
        "rounds": choice.rounds,
    }


def precision_of(path: str) -> str:
    """``ours:openvino-int8`` -> int8, ``peer:onnxruntime`` -> fp32..."""
    return precision(path.split(":", 1)[1]) if path.startswith("ours:") else PEER_PRECISION[path]


ATTEMPT_KEYS = ("speedup", "speedup_exact", "ours_fastest", "peer_fastest", "load_average_1m")


def spread(cell: dict) -> float:
    """The wider interquartile range, relative to its median, of the cell's two head-to-head ratios."""
    return max((h["q3"] - h["q1"]) / h["median"] for h in (cell["head_to_head"], cell["head_to_head_exact"]))


def runtime_of(path: str) -> str:
    """``ours:openvino-int8`` -> openvino, ``peer:onnxruntime`` -> onnxruntime."""
    return path.split(":", 1)[1].split("-", 1)[0]


def why_below(cell: dict, exact: bool) -> str | None:
    """Why a cell's speed-up is below 1.0, from what was measured (None when it is not below)."""
    h = cell["head_to_head_exact" if exact else "head_to_head"]
    if h["median"] >= 1.0:
        return None
    ours, peer = h["a"], h["b"]
    rounds = len(h["ratios"])
    same = runtime_of(ours) == runtime_of(peer) and precision_of(ours) == precision_of(peer)
    what = (
        f"the same runtime ({runtime_of(ours)}, {precision_of(ours)}) runs the same architecture on both sides"
        if same
        else f"{ours[5:]} against {peer[5:]}"
    )
    if h["verdict"] == "tie":
        return (f"a tie: {what}; mobilezoo won {h['a_faster']} of {rounds} head-to-head rounds (sign test p = "
                f"{h['p_value']:.2f}: no difference this measurement can tell)")  # fmt: skip
    why = f"slower: {what}; mobilezoo won {h['a_faster']} of {rounds} rounds (p = {h['p_value']:.2g})"
    twin = next((k for k in cell["candidates"] if k.startswith("ours:") and runtime_of(k) == runtime_of(peer)
                 and precision_of(k) == precision_of(peer)), None)  # fmt: skip
    if twin and twin != ours:
        c = cell["candidates"]
        why += (f". mobilezoo's own {twin[5:]} path ran {c[twin]['median_ms']:.2f} ms against the peer's "
                f"{c[peer]['median_ms']:.2f} (round medians)")  # fmt: skip
        match = next((k for k in cell["knockouts"] if {k["a"], k["b"]} == {twin, ours}), None)
        if match:
            ratio = match["median"] if match["a"] == ours else 1 / match["median"]
            why += (f"; the play-off picked {ours[5:]} over it at {ratio:.3f} ({match['verdict']}, "
                    f"{len(match['ratios'])} rounds): two runtimes within a few percent, ranked by chance")  # fmt: skip
    return why


def write_markdown(data: dict, path: Path) -> None:
    env = data["environment"]
    lines = [
        "# mobilezoo's fastest path vs the same architecture exported plainly",
        "",
        f"Written by `benchmarks/peers.py` from `{path.with_suffix('.json').name}`. Machine: {env['cpu_summary']}, "
        f"{env['usable_cpus']} cpus; torch {env['torch']}, onnxruntime {env['onnxruntime']}, openvino "
        f"{env['openvino']}; {data['threads']} threads, 224x224, random weights. All paths of a row were timed "
        f"interleaved in one process ({data['rounds']} rounds of blocks) to pick each side's fastest; the times are "
        "medians of per-round medians (paths within 10% of a side's first played it off head to head, and the "
        "winner is that side's fastest; the play-offs are in the JSON). Each side's fastest was then timed head to "
        "head against the other's "
        f"({data['pair_rounds']} rounds of adjacent blocks): the speed-up is the median of those paired ratios (the "
        "peer's time / mobilezoo's: above 1, mobilezoo faster), *IQR* their interquartile range, *won* the rounds "
        "mobilezoo won, and the verdict a two-sided sign test's at p < 0.05 (*tie*: no difference the measurement "
        f"can tell). A cell whose IQR exceeded {data['max_spread']} of its median was measured again (up to "
        f"{data['retries']} more times; the least disturbed attempt is shown, every attempt is in the JSON) and is "
        "marked *disturbed* if it stayed above.",
        "",
        "*Any precision*: int8 and bf16 allowed (labelled); *exact*: fp32 paths only. The peer is exported with "
        "`torch.onnx.export`'s defaults, at the row's batch size (a fixed shape).",
        "",
        "| model | batch | fastest peer, ms (path) | mobilezoo fastest, ms (path) | speed-up | IQR | won | "
        "fastest exact peer, ms | mobilezoo fastest exact, ms | exact speed-up | IQR | won |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pair(h: dict) -> str:
        verdict = "" if h["verdict"] == "faster" else f" ({h['verdict']})"
        return f"**{h['median']:.2f}**{verdict} | {h['q1']:.2f}-{h['q3']:.2f} | {h['a_faster']}/{len(h['ratios'])}"

    for c in data["cells"]:
        o, p, oe, pe = c["ours_fastest"], c["peer_fastest"], c["ours_fastest_exact"], c["peer_fastest_exact"]
        lines.append(
            f"| {c['model']} | {c['batch_size']} | {p['median_ms']:.2f} ({p['path'][5:]}, {p['precision']}) | "
            f"{o['median_ms']:.2f} ({o['path'][5:]}, {o['precision']}){' (disturbed)' if c['disturbed'] else ''} | "
            f"{pair(c['head_to_head'])} | {pe['median_ms']:.2f} ({pe['path'][5:]}) | "
            f"{oe['median_ms']:.2f} ({oe['path'][5:]}) | {pair(c['head_to_head_exact'])} |"
        )
    below = [(c, exact, why_below(c, exact)) for c in data["cells"] for exact in (False, True)]
    below = [(c, exact, why) for c, exact, why in below if why]
    if below:
        lines += ["", "## Cells below 1.0, and why", ""]
        lines += [f"- {c['model']} batch {c['batch_size']}, {'exact' if exact else 'any precision'}: {why}"
                  for c, exact, why in below]  # fmt: skip
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
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds over every path (picks the fastest)")
    ap.add_argument("--pair-rounds", type=int, default=40, help="head-to-head rounds per compared pair")
    ap.add_argument("--max-spread", type=float, default=0.2,
                    help="a cell whose head-to-head ratios' IQR exceeds this fraction of their median was disturbed: "
                         "measured again (the least disturbed attempt is kept, and marked if still above)")  # fmt: skip
    ap.add_argument("--retries", type=int, default=2, help="re-measurements of a disturbed cell")
    ap.add_argument("--out", default=None, help="default: results/peers_<cpu vendor>_<int8 feature>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unmeasured = [d.policy for d in current(args.threads) if d.how == "default"]
    if unmeasured:  # ours must run with this machine's policies, not the defaults (`mobilezoo tune`)
        print(f"not measured on this machine: {', '.join(unmeasured)}; measuring them first", file=sys.stderr)
        tune(threads=args.threads)
    env = environment()
    env["cpu_summary"] = cpu_info().summary()
    env["cpu_features"] = cpu_info().to_dict()
    cells = []
    for name in args.models:
        for b in args.batches:
            attempts = []
            while len(attempts) <= args.retries:
                print(f"{name} batch {b} (attempt {len(attempts) + 1})", file=sys.stderr, flush=True)
                cell = measure_cell(name, b, args.threads, args.rounds, args.pair_rounds)
                cell["load_average_1m"] = os.getloadavg()[0]
                attempts.append(cell)
                print(f"  ours {cell['ours_fastest']} peer {cell['peer_fastest']} x{cell['speedup']:.2f} "
                      f"exact x{cell['speedup_exact']:.2f} IQR/median {spread(cell):.2f}",
                      file=sys.stderr, flush=True)  # fmt: skip
                if spread(cell) <= args.max_spread:
                    break
            cell = min(attempts, key=spread)  # the least disturbed attempt; all of them are kept
            cell["disturbed"] = spread(cell) > args.max_spread
            cell["attempts"] = [{k: a[k] for k in ATTEMPT_KEYS} | {"spread": spread(a)} for a in attempts]
            cells.append(cell)
    data = {"environment": env, "threads": args.threads, "rounds": args.rounds, "pair_rounds": args.pair_rounds,
            "max_spread": args.max_spread,
            "retries": args.retries, "cells": cells, "policies": [d.to_dict() for d in current()]}  # fmt: skip
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"peers_{cpu_info().kind()}.json"
    out.write_text(json.dumps(data, indent=1) + "\n")
    write_markdown(data, out.with_suffix(".md"))
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
