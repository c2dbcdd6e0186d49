"""The report's content as format-neutral sections (paragraphs, tables, images) that ``render`` writes as md or html.

Numbers are formatted as ``mobilezoo tables`` prints them (floats with two decimals and thousands separators, ints
with separators, top-1 with one decimal), so a reader can diff the two. A latency that stayed noisy after re-measuring
is shown with the mark :data:`NOISY` and no conclusion is drawn from it: no fastest backend, no ratio, no "latency
follows / lags MAdds" finding; the sentence says the measurement was disturbed instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobilezoo.formatting import fmt
from mobilezoo.report.plots import ALPHA, RHO, pareto_frontier, subtitle

if TYPE_CHECKING:
    from mobilezoo.complexity.tables import Figure, TableResult
    from mobilezoo.complexity.timeline import Timeline
    from mobilezoo.detection.table import Table513
    from mobilezoo.report.build import Latency, ModelEntry, ReportData, SweepResult
    from mobilezoo.selection import Selection


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Image:
    path: Path
    alt: str


Block = str | Table | Image


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block]


NOISY = "noisy"  # the mark of a latency the machine's load disturbed (see mobilezoo.benchmark.Noise)
DISTURBED = "disturbed (noisy)"  # instead of a conclusion drawn from a noisy latency


def _noise_rule() -> str:
    from mobilezoo.benchmark import MAX_IQR_OVER_MEDIAN, MAX_MEDIAN_OVER_MIN, MAX_PASS_RATIO

    return (
        f"A latency is marked {NOISY} when its timed calls are far apart (interquartile range above "
        f"{MAX_IQR_OVER_MEDIAN:g} x the median, or the median above {MAX_MEDIAN_OVER_MIN:g} x the fastest call) or its "
        f"steady passes disagree by more than {MAX_PASS_RATIO:g}x, even after being re-measured interleaved with what "
        "it is compared against: the machine's load disturbed it, and no conclusion is drawn from it."
    )


def _pct(value: float | None) -> str:
    return f"{value:+.2f}%" if value is not None else "-"


def _figure(f: Figure | None) -> list[str]:
    if f is None:
        return ["-"] * 4
    return [fmt(f.textbook), fmt(f.paper), fmt(f.ours), _pct(f.diff_pct)]


def textbook_table(table: TableResult) -> Table:
    """One of the textbook's tables: textbook, paper (where it differs), ours and the difference, as the CLI shows."""
    notes: list[str] = []
    rows = []
    for r in table.rows:
        marks = []
        for text in (r.flag, r.note, r.error):
            if text:
                if text not in notes:  # a flag shared by rows (Table 5-11) is one footnote
                    notes.append(text)
                marks.append(f"[{notes.index(text) + 1}]")
        top1 = fmt(r.top1_textbook, 1) + (f" ({r.top1_paper})" if r.top1_paper is not None else "")
        row = [r.label + (f" @{r.resolution}" if r.resolution != 224 else ""), top1, *_figure(r.madds)]
        row += _figure(r.params)
        if table.channel_labels:
            ours = "/".join(map(str, r.channels_ours or ()))
            row.append(ours + ("" if r.channels_ours == r.channels_textbook else " != textbook"))
        row.append(" ".join([r.status, *marks]))
        rows.append(row)
    columns = ["row", "top-1 % textbook (paper)", "MAdds M textbook", "paper", "ours", "ours vs paper"]
    columns += ["params M textbook", "paper", "ours", "ours vs paper"]
    if table.channel_labels:
        columns.append(" / ".join(table.channel_labels))
    columns.append("status")
    notes = [f"Convention: {table.convention}.", *(f"[{i}] {t}" for i, t in enumerate(notes, 1))]
    return Table(columns, rows, f"Table {table.id}: {table.title}", notes)


def timeline_table(tl: Timeline) -> Table:
    """The chapter's timeline: year, model, the paper's top-1 / MAdds / params and our counts, as ``mobilezoo tables
    timeline`` prints it."""
    notes: list[str] = []
    rows = []
    for r in tl.rows:
        marks = []
        for text in (r.note, r.error):
            if text:
                if text not in notes:
                    notes.append(text)
                marks.append(f"[{notes.index(text) + 1}]")
        rows.append(
            [
                str(r.year),
                r.label + (f" @{r.resolution}" if r.resolution != 224 else ""),
                f"`{r.model}`" if r.model else "-",
                fmt(r.paper_top1, 1),
                fmt(r.paper_madds_m),
                fmt(r.madds_m),
                _pct(r.madds_vs_paper_pct),
                fmt(r.paper_params_m),
                fmt(r.params / 1e6) if r.params is not None else "-",
                " ".join([r.status, *marks]),
            ]
        )
    columns = ["year", "model", "registered as", "paper top-1 %", "paper MAdds M", "ours", "ours vs paper"]
    columns += ["paper params M", "ours", "status"]
    notes = [f"Convention: {tl.convention}", *(f"[{i}] {t}" for i, t in enumerate(notes, 1))]
    return Table(columns, rows, tl.title, notes)


def budget_table(budgets: tuple[Selection, ...]) -> Table:
    """The best timed model per latency budget (``mobilezoo select`` on the report's own measurements)."""
    rows = []
    for s in budgets:
        p = s.pick
        if p is None:
            rows.append([f"{s.budget.limit_ms:g}", "nothing fits", "-", "-", "-", "-", s.message])
            continue
        backend = p.backend + (" (int8; top-1 is fp32)" if p.precision == "int8" else "")
        note = "; ".join(s.notes) or "-"
        rows.append([f"{s.budget.limit_ms:g}", f"`{p.candidate.model}` @{p.candidate.resolution}", backend,
                     fmt(p.candidate.top1, 1), fmt(p.median_ms), fmt(p.p90_ms), note])  # fmt: skip
    columns = ["budget, ms per image", "most accurate that fits", "backend", "paper top-1 %", "median ms", "p90 ms"]
    columns.append("note")
    notes = [
        "From the latencies above (batch 1, this machine), among the timed models at their native resolution: the "
        "most accurate whose fastest backend meets the budget. `mobilezoo select --latency-ms MS` searches every "
        "width and resolution with a published top-1 instead."
    ]
    return Table(columns, rows, "Which model to run here: the best per latency budget", notes)


def _ms(lat: Latency | None) -> str:
    if lat is None:
        return "-"
    if lat.median_ms is None:
        return "error"
    return f"{lat.median_ms:,.2f} ({lat.p90_ms:,.2f})" + (f" {NOISY}" if lat.noisy else "")


def latency_table(models: list[ModelEntry], backends: tuple[str, ...]) -> Table:
    notes: list[str] = []
    rows = []
    any_noisy = False
    for e in models:
        cells = [e.name, fmt(e.madds_m)]
        for b in backends:
            lat = e.latency(b)
            cell = _ms(lat)
            if lat is not None and lat.error:
                notes.append(f"{e.name} on {b}: {lat.error}")
                cell += f" [{len(notes)}]"
            cells.append(cell)
        best, exact, eager = e.fastest, e.fastest_exact, e.latency("eager")
        undecided = DISTURBED if e.noisy_backends else "-"
        any_noisy = any_noisy or bool(e.noisy_backends)
        cells.append(best.backend if best else undecided)
        cells.append(exact.backend if exact else undecided)
        speedup = eager.median_ms / best.median_ms if best and eager and eager.median_ms else None
        cells.append(f"{speedup:.2f}x" if speedup else "-")
        rows.append(cells)
    columns = ["model", "MAdds M", *(f"{b} ms median (p90)" for b in backends), "fastest", "fastest exact"]
    columns.append("eager / fastest")
    notes.insert(
        0, "Exact backends compute the float model; int8 quantization changes the outputs (see `mobilezoo export`)."
    )
    if any_noisy:
        notes.insert(1, _noise_rule() + " No fastest backend is named for a model with a noisy latency.")
    return Table(columns, rows, "Latency per call, batch of one image", notes)


def _unmeasured(e: ModelEntry) -> str:
    return DISTURBED if e.noisy_backends else "not measured"


def pareto_table(models: tuple[ModelEntry, ...]) -> Table:
    pts = [e for e in models if e.paper_top1 is not None]
    on_madds = {pts[i].name for i in pareto_frontier([(e.madds_m, e.paper_top1) for e in pts])}
    timed = [e for e in pts if e.fastest_exact]
    on_lat = {timed[i].name for i in pareto_frontier([(e.fastest_exact.median_ms, e.paper_top1) for e in timed])}
    rows = []
    for e in sorted(pts, key=lambda e: e.madds_m):
        lat = e.fastest_exact
        rows.append(
            [
                e.name,
                e.family,
                fmt(e.paper_top1, 1),
                fmt(e.paper_madds_m),
                fmt(e.madds_m),
                fmt(e.paper_params_m),
                fmt(e.params_m),
                f"{lat.median_ms:,.2f} ({lat.backend})" if lat else _unmeasured(e),
                " + ".join(k for k, on in (("MAdds", on_madds), ("latency", on_lat)) if e.name in on) or "-",
            ]
        )
    columns = ["model", "family", "paper top-1 %", "paper MAdds M", "ours MAdds M", "paper params M", "ours params M"]
    columns += ["latency ms (backend)", "on the frontier of"]
    return Table(columns, rows, "The models in the charts (top-1 is the paper's: no ImageNet run here)")


def _sweep_table(sweep: SweepResult) -> Table:
    ref = sweep.reference
    symbol = ALPHA if sweep.kind == "width" else RHO
    rows = []
    for r in sweep.rows:
        cells = [f"{r.multiplier:.3g}", r.model + (f" {r.model_kwargs}" if r.model_kwargs else ""), str(r.resolution)]
        cells += [fmt(r.madds_m), f"{r.madds_m / ref.madds_m:.3f}"]
        for lat, ref_lat in zip(r.latencies, ref.latencies):
            cells.append(_ms(lat))
            ok = lat.median_ms and ref_lat.median_ms
            mark = f" {NOISY}" if lat.noisy or ref_lat.noisy else ""
            cells.append(f"{lat.median_ms / ref_lat.median_ms:.3f}{mark}" if ok else "-")
            cells.append(f"{1e3 * lat.median_ms / r.madds_m:,.2f}{mark}" if lat.median_ms else "-")
        rows.append(cells)
    columns = [symbol, "model", "px", "MAdds M", f"MAdds / {symbol}={ref.multiplier:.3g}"]
    for lat in ref.latencies:
        columns += [f"{lat.backend} ms median (p90)", "latency ratio", "µs per M MAdds"]
    notes = ["The points of a sweep are timed interleaved (one call of each per round), so they share the same load."]
    if any(lat.noisy for r in sweep.rows for lat in r.latencies):
        notes.append(_noise_rule())
    return Table(columns, rows, f"{sweep.family}, {sweep.kind} sweep", notes)


def sweep_finding(sweep: SweepResult) -> str:
    """Where latency stops following MAdds: the smallest point's ratios and the first point that lags by 1.5x.

    No finding is drawn for a backend with a noisy point: the sentence says the measurement was disturbed instead.
    """
    ref = sweep.reference
    symbol = ALPHA if sweep.kind == "width" else RHO
    smallest = min(sweep.rows, key=lambda r: r.multiplier)
    parts = []
    for j, ref_lat in enumerate(ref.latencies):
        noisy = sweep.noisy_multipliers(j)
        if noisy:
            where = ", ".join(f"{symbol} = {m:.3g}" for m in noisy)
            parts.append(
                f"{ref_lat.backend}: the measurement was disturbed (noisy at {where} even after re-measuring "
                f"interleaved), so no conclusion about latency against MAdds is drawn from this sweep."
            )
            continue
        lat = smallest.latencies[j]
        if not (lat.median_ms and ref_lat.median_ms):
            continue
        m_rel = smallest.madds_m / ref.madds_m
        l_rel = lat.median_ms / ref_lat.median_ms
        lagging = [
            r.multiplier
            for r in sorted(sweep.rows, key=lambda r: -r.multiplier)
            if r.multiplier < ref.multiplier
            and r.latencies[j].median_ms
            and (r.latencies[j].median_ms / ref_lat.median_ms) > 1.5 * (r.madds_m / ref.madds_m)
        ]
        where = (
            f"latency lags MAdds by more than 1.5x from {symbol} = {lagging[0]:.3g} down"
            if lagging
            else "latency follows MAdds within 1.5x over the whole sweep"
        )
        parts.append(
            f"{lat.backend}: at {symbol} = {smallest.multiplier:.3g} MAdds are {100 * m_rel:.1f}% of "
            f"{symbol} = {ref.multiplier:.3g} and latency is {100 * l_rel:.1f}%; {where}."
        )
    return " ".join(parts) or "No latency was measured for this sweep."


def _ap_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table_5_13(det: Table513 | None, threads: Any) -> Table:
    """Table 5-13 (the ShuffleNet V2 paper's Table 7) measured here beside the paper's figures, with its caveats."""
    from mobilezoo.detection.table import LEVELS, PAPER_GPU_FPS, PAPER_MMAP

    columns = ["backbone", "level", "our backbone", "MAdds M @224", "AP % here", "mmAP % (paper)"]
    columns += ["CPU images/s here", "GPU images/s (paper)"]
    rows: list[list[str]] = []
    for i, level in enumerate(LEVELS):
        rows.append(["Xception", level, "not reproduced", "-", "-", fmt(PAPER_MMAP["Xception"][i], 1), "-"])
        rows[-1].append(str(PAPER_GPU_FPS["Xception"][i]))
        for r in det.rows if det is not None else ():
            if r.level != level:
                continue
            ap = _ap_pct(r.ap) + (f" ({', '.join(_ap_pct(a) for a in r.ap_seeds)})" if len(r.ap_seeds) > 1 else "")
            fps = "-" if r.cpu_images_per_s is None else fmt(r.cpu_images_per_s, 2)
            if r.cpu_images_per_s is not None and r.speed_noisy:
                fps += f" {NOISY}"
            if r.speed_source == "committed":
                fps += " (committed)"
            madds = "-" if r.madds_m is None else fmt(r.madds_m)
            rows.append([r.row, level, r.backbone, madds, ap, fmt(r.paper_mmap, 1), fps, str(r.paper_gpu_images_per_s)])
    notes = [
        "The paper: Light-Head R-CNN on COCO (trainval35k, minival mmAP), ImageNet-pretrained backbones, GPU images/s "
        "at 800x1200, batch 4; the levels are the backbones' classification MFLOPs at 224 px. The textbook's Table "
        "5-13 is its 500M column. Xception (the paper's own implementation, unspecified) is not reproduced.",
        "Our backbones are the paper's Table 8 widths. MAdds are counted here: MobileNet v2 0.15 and 0.6 count 30.6M "
        "and 151M against Table 8's 39M and 141M (its implementation's channel rounding is not given; ours rounds to "
        "multiples of 8, as the MobileNetV2 code does).",
    ]
    if det is None or not any(r.ap is not None for r in det.rows):
        notes.append(
            "AP here: not measured (no results file; `python benchmarks/detection_table.py` trains the cells, about "
            "3-6 minutes each on 2 cores)."
        )
    else:
        sch = det.schedule
        canvas = sch.get("canvas", {})
        notes.append(
            f"AP here: COCO AP@[.5:.95] (pycocotools) on {sch.get('val_canvases')} validation canvases of "
            f"{canvas.get('size')} px: synthetic layouts of real MNIST handwriting (validation digits only), not COCO. "
            f"Same detector and schedule for every cell: {sch.get('detector', '').upper()} (torchvision's, a "
            f"{sch.get('options', {}).get('fpn_channels', 64)}-channel FPN), {sch.get('steps')} steps of "
            f"{sch.get('batch_size')} fresh canvases, trained from scratch (not ImageNet-pretrained), on "
            f"{det.train_env.get('cpu', 'this CPU')}. The stride-32 tap is the backbone's last conv (conv5)."
        )
        if det.spread is not None:
            notes.append(
                f"Seed-to-seed spread of {det.spread_cell}: {100 * det.spread:.1f} AP points; differences smaller than "
                "that are ties."
            )
        else:
            notes.append(
                "No cell was trained with two seeds: the seed-to-seed spread is unknown, so no AP gap is shown as real."
            )
    for level in LEVELS:
        mine = det.order(level, "ap", det.spread or 0.0) if det is not None else ""
        if " " in mine:
            paper = det.order(level, "paper_mmap", among="ap")  # type: ignore[union-attr]
            notes.append(f"{level}, AP order here: {mine}; the paper's: {paper}.")
    untrained = [
        lv for lv in LEVELS if det is not None and not any(r.ap is not None for r in det.rows if r.level == lv)
    ]
    if untrained:
        notes.append(
            f"AP at {', '.join(untrained)}: not trained here (each cell takes 10-25 minutes on 2 cores); "
            f"`mobilezoo detect table --levels {' '.join(untrained)}` trains them into the results file."
        )
    where = det.speed_env.get("cpu") if det is not None else None
    used = sorted({r.speed_threads for r in det.rows if r.speed_threads is not None}) if det is not None else []
    speed_threads = " or ".join(map(str, used)) if used else threads
    notes.append(
        "CPU images/s here: the paper's detector (Light-Head R-CNN as built by mobilezoo.detection, random weights, "
        f"80 classes) at 800x1200, batch 4, fp32 eager, {speed_threads} thread(s); the rows of one level timed "
        "interleaved. "
        "'now' figures were measured in this run; '(committed)' ones come from the results file"
        + (f" (measured on {where})." if where else ".")
    )
    for level in LEVELS:
        mine = det.order(level, "cpu_images_per_s") if det is not None else ""
        if " " in mine:
            paper = det.order(level, "paper_gpu_images_per_s", among="cpu_images_per_s")  # type: ignore[union-attr]
            notes.append(f"{level}, speed order here: {mine}; the paper's (GPU): {paper}.")
    return Table(
        columns, rows, "Table 5-13: lightweight backbones in one detector, measured here beside the paper", notes
    )


def machine_table(data: ReportData) -> Table:
    env = data.env
    keys = ["date_utc", "cpu", "logical_cpus", "usable_cpus", "threads", "cpu_capability", "load_average_1m"]
    keys += ["platform", "python", "torch", "torchvision", "onnxruntime", "onnx", "numpy", "matplotlib", "mobilezoo"]
    rows = [[k, fmt(env.get(k))] for k in keys if env.get(k) is not None]
    cfg = data.config
    rows += [
        ["mode", cfg.mode],
        ["batch size / dtype", f"{cfg.batch_size} / float32, device cpu"],
        ["warm-up / timed calls", f"{cfg.warmup} / {cfg.iters} per cell"],
        ["noise test", _noise_rule()],
        ["build time", ", ".join(f"{k} {v:.1f} s" for k, v in data.seconds.items())],
    ]
    return Table(["what", "value"], rows, "Machine, versions and settings")


def sections(data: ReportData, pngs: dict[str, Path]) -> list[Section]:
    cfg = data.config
    timed = [e for e in data.models if e.latencies]
    ok = sum(r.reproduces for t in data.tables for r in t.rows)
    n_rows = sum(len(t.rows) for t in data.tables)
    summary = [
        f"The textbook's comparison tables recomputed from mobilezoo's code, the papers' figures beside them, and how "
        f"fast each model runs on this machine ({subtitle(data)}). Mode `{cfg.mode}`: {len(timed)} model(s) timed on "
        f"{', '.join(cfg.backends)}; {len(data.models) - len(timed)} more counted only; built in "
        f"{data.seconds.get('total', 0):.0f} s on {data.env.get('date_utc')}.",
        f"Textbook tables: {ok} of {n_rows} rows reproduce (status ok, or flagged where the paper or the textbook "
        f"itself is inconsistent). The same numbers as `mobilezoo tables`.",
    ]
    load, cpus = data.env.get("load_average_1m"), data.env.get("usable_cpus") or 1
    if load is not None and load > cpus:
        summary.append(
            f"Warning: the machine was busy (1-minute load average {load:.1f} on {cpus} usable CPUs): latencies are "
            "inflated and noisier than on an idle machine. The counts are unaffected."
        )
    noisy = [f"{e.name} on {b}" for e in data.models for b in e.noisy_backends]
    noisy += [
        f"{s.family} {s.kind} sweep on {lat.backend} at {ALPHA if s.kind == 'width' else RHO} = {m:.3g}"
        for s in data.sweeps
        for j, lat in enumerate(s.reference.latencies)
        for m in s.noisy_multipliers(j)
    ]
    if noisy:
        summary.append(
            f"Warning: {len(noisy)} latency measurement(s) stayed noisy after re-measuring interleaved "
            f"({'; '.join(noisy)}): the machine's load disturbed them. They are marked {NOISY}, and no conclusion "
            "(fastest backend, ratio, latency against MAdds) is drawn from them."
        )
    out = [Section("summary", "Summary", list(summary))]
    out.append(Section("tables", "The textbook's tables, recomputed", [textbook_table(t) for t in data.tables]))
    if data.timeline is not None:
        out.append(Section("timeline", "The timeline of lightweight DCNNs", [timeline_table(data.timeline)]))

    pareto: list[Block] = [
        "One marker per model: top-1 is the paper's ImageNet figure (no ImageNet run here), MAdds are counted from "
        "the code, latency is the median of the fastest exact backend on this machine. The dashed staircase is the "
        "Pareto frontier: no other model is both cheaper and more accurate.",
        Image(pngs["pareto_madds"], "paper top-1 against counted MAdds"),
    ]
    if "pareto_latency" in pngs:
        pareto.append(Image(pngs["pareto_latency"], "paper top-1 against measured latency"))
    pareto.append(pareto_table(data.models))
    out.append(Section("pareto", "Accuracy against cost: the Pareto charts", pareto))

    if timed:
        blocks: list[Block] = [latency_table(timed, cfg.backends)]
        if "backends" in pngs:
            blocks.append(Image(pngs["backends"], "median latency per model and backend"))
        out.append(Section("latency", "Latency across backends", blocks))

    if data.budgets:
        out.append(Section("budgets", "Which model to run here", [budget_table(data.budgets)]))

    if data.sweeps:
        blocks = [
            f"MobileNets §3.3-3.4: the width multiplier {ALPHA} scales MAdds by about {ALPHA}², the resolution "
            f"multiplier {RHO} by {RHO}². "
            "Latency follows only while the convolutions dominate; at small sizes fixed per-layer costs (memory "
            "traffic, kernel launches, the classifier) take over."
        ]
        families = dict.fromkeys(s.family for s in data.sweeps)
        for family in families:
            key = "sweep_" + "".join(c if c.isalnum() else "_" for c in family.lower()).strip("_")
            if key in pngs:
                blocks.append(Image(pngs[key], f"{family}: MAdds and latency against the multipliers"))
            for s in data.sweeps:
                if s.family == family:
                    blocks.append(_sweep_table(s))
                    blocks.append(sweep_finding(s))
        out.append(Section("sweeps", "Width and resolution sweeps", blocks))

    out.append(
        Section("detection", "Table 5-13: detection backbones", [table_5_13(data.detection, data.env.get("threads"))])
    )
    out.append(Section("machine", "Machine, versions and date", [machine_table(data)]))
    return out
