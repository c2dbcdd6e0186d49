"""``mobilezoo export``: write a model as ONNX (fp32 or int8), TorchScript or a torch.export program, checked."""

from __future__ import annotations

import argparse

from mobilezoo.cli._output import console, print_json, print_table
from mobilezoo.deploy.export import FORMATS, export_model
from mobilezoo.deploy.onnx_export import DEFAULT_OPSET, MAX_OPSET_LEGACY, MIN_OPSET
from mobilezoo.deploy.quantize import DEFAULT_EXCLUDE


def _resolution(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text:
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 224 or 192x160, got {text!r}") from None


# the result's entries printed in the table (when present and set)
_SHOWN = ("opset", "exporter", "how", "batch_size", "dynamic_hw", "check_batch", "quant_format", "calibration_images")


def _fixed_batch(args: argparse.Namespace) -> int:
    if args.batch is not None and args.static_batch and args.batch != 1:
        raise ValueError(f"--static-batch fixes the batch at 1 but --batch is {args.batch}: give one of them")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    return 1 if args.batch is None else args.batch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32/int8), TorchScript or torch.export, checked")
    p.add_argument("--model", required=True, help="registered model name (see `mobilezoo list`)")
    p.add_argument(
        "--weights",
        default=None,
        help="weights file (.safetensors/.pth), 'torchvision', 'timm:<model>' or 'megvii:<file>'",
    )
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument(
        "--out", required=True, help="output file (.onnx, .pt, .pt2; .xml for OpenVINO IR, its .bin beside it)"
    )
    p.add_argument("--resolution", type=_resolution, default=224, help="input size: 224 or HxW such as 192x160")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}-{MAX_OPSET_LEGACY} for older runtimes (default {DEFAULT_OPSET}; onnx-int8 needs 13+)")  # fmt: skip
    p.add_argument("--dynamic-hw", action="store_true",
                   help="dynamic input height and width (onnx, torchscript); checked at a second size too")  # fmt: skip
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="fix the batch at N instead of a dynamic batch (onnx, exported-program)")  # fmt: skip
    p.add_argument("--static-batch", action="store_true", help="the same as --batch 1")
    p.add_argument("--calib", default=None, help="int8 calibration: 'builtin', an image folder, or 'random'")
    p.add_argument("--calib-images", type=int, default=256)
    p.add_argument("--per-tensor", action="store_true", help="int8 weights per tensor instead of per channel")
    p.add_argument("--exclude", nargs="*", default=None,
                   help="nodes kept in float: op types, node names, first-conv, float-stem, float-stem-if-faster, last-gemm (default: float-stem-if-faster, the stem as this machine's policy says; the classifier is int8 with float logits; none given: quantize all)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    result = export_model(
        args.model,
        args.out,
        format=args.format,
        weights=args.weights,
        num_classes=args.num_classes,
        in_chans=args.in_chans,
        resolution=args.resolution,
        opset=args.opset,
        dynamic_batch=not args.static_batch and args.batch is None,
        dynamic_hw=args.dynamic_hw,
        batch_size=_fixed_batch(args),
        calibration=args.calib,
        calibration_images=args.calib_images,
        per_channel=not args.per_tensor,
        exclude=DEFAULT_EXCLUDE if args.exclude is None else args.exclude,
    )
    d = result.to_dict()
    if args.json:
        print_json(d)
        return 0
    rows = [("file", d["path"]), ("format", d["format"]), ("size (MB)", d["size_bytes"] / 1e6)]
    if d["max_abs_diff"] is not None:
        rows.append(("max |diff| vs PyTorch", f"{d['max_abs_diff']:.2e}"))
    for key in _SHOWN:
        if key in d and d[key] is not None and d[key] is not False:
            rows.append((key, "yes" if d[key] is True else d[key]))
    if "fp32_size_bytes" in d:
        rows.append(("fp32 size (MB)", d["fp32_size_bytes"] / 1e6))
        rows.append(("nodes kept in float", ", ".join(d["nodes_kept_float"]) or "none"))
        rows.append(("graph rewrites", ", ".join(f"{k} x{n}" for k, n in d["rewrites"].items() if n) or "none"))
    if "accuracy" in d:
        acc = d["accuracy"]
        rows += [("top-1 fp32 / int8 (%)", f"{acc['top1_reference']:.2f} / {acc['top1_candidate']:.2f}"),
                 ("top-1 agreement (%)", acc["agreement"]), ("validation images", acc["images"])]  # fmt: skip
    print_table(rows, ["", "value"], title=f"mobilezoo export {result.model}")
    if result.format.endswith("-int8") and "accuracy" not in d:
        console.print("[yellow]calibrated on random noise: for smoke tests only, accuracy not measured[/yellow]")
    return 0
