"""``automtl export MODEL_OR_RUN --onnx out.onnx [--python DIR] [--torchscript out.pt]``."""

from __future__ import annotations

import argparse

from automtl.errors import ConfigError

DESCRIPTION = """\
Export the derived multi-task model of a search run (or of a saved derived-model file) to
ONNX (one graph, one output per task, dynamic batch axis), to standalone Python source plus
weights, and/or to TorchScript. Every export is checked against the PyTorch model on a random
input of the model's size before it is written; a failed export leaves no file behind.
"""

EPILOG = """\
MODEL_OR_RUN is a search run directory (automtl search --out DIR) or a file written by
automtl.save_model(model, path, spec).

examples:
  automtl export runs/scenes --onnx scenes.onnx
  automtl export runs/scenes --onnx m.onnx --python exported/ --torchscript m.pt
  automtl export model.pt --torchscript m.pt --trace

Exit status: 0 on success, 2 on a user error (one line on stderr).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a derived model to ONNX, Python source and/or TorchScript",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL_OR_RUN", help="a search run directory or a saved derived-model file")
    parser.add_argument("--onnx", metavar="FILE", help="write the ONNX graph here")
    parser.add_argument("--python", metavar="DIR", help="write model.py and weights.pt into this folder")
    parser.add_argument("--torchscript", metavar="FILE", help="write the TorchScript archive here")
    parser.add_argument("--trace", action="store_true", help="TorchScript by tracing instead of scripting")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--input-size",
        metavar="CxHxW",
        help="size of one input (no batch) to export and check with; default: the size the model was built for",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    parser.add_argument("--trust-code", action="store_true",
                        help="the model's backbone is a factory of yours (module:<package.module>:<factory>): import and call it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not (args.onnx or args.python or args.torchscript):
        raise ConfigError("nothing to export: give --onnx FILE, --python DIR and/or --torchscript FILE")
    from automtl.cli.info_cmd import parse_input_size
    from automtl.export import export_onnx, export_python, export_torchscript
    from automtl.export.saved import example_input, load_derived

    size = parse_input_size(args.input_size) if args.input_size else None
    loaded = load_derived(args.model, trust_code=args.trust_code)
    size = size or loaded.input_shape
    if size is None:
        raise ConfigError(f"{loaded.source} does not record its input size; give --input-size CxHxW")
    x = example_input(tuple(size))
    check = not args.no_check
    model = loaded.model
    if args.onnx:
        path = export_onnx(model, args.onnx, x, opset=args.opset, check=check)
        print(f"wrote {path} (ONNX; outputs {', '.join(model.task_names)}; input [batch, {', '.join(map(str, size))}])")
    if args.python:
        path = export_python(model, args.python, x if check else None)
        print(f"wrote {path} and its weights (Python; `import model; model.load()`)")
    if args.torchscript:
        method = "trace" if args.trace else "script"
        path = export_torchscript(model, args.torchscript, method, x, check=check)
        print(f"wrote {path} (TorchScript, {'traced' if args.trace else 'scripted'})")
    return 0
