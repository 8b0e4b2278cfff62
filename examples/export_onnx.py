"""Export a fixed multi-task model to ONNX, TorchScript and readable Python, and check each.

    python examples/export_onnx.py [--run RUN_DIR] [--out exported]

With ``--run`` the model is the one a search run found (``automtl search --out RUN_DIR``).
Without it, the shipped ResNet-18 prototxt is compiled for three tasks and a policy is drawn at
random, so the exported model holds shared, task-specific and skipped operators. Each export is
checked against PyTorch on the way out: the ONNX graph in onnxruntime, the TorchScript archive
and the Python module by running them on the example input (an ExportError if they differ).
The script then runs the ONNX file once more in onnxruntime and prints the largest difference.

Using the files (only ever load files you made or trust: TorchScript and Python run code):

    net = torch.jit.load("exported/model.pt")            # TorchScript
    sys.path.insert(0, "exported/python"); import model  # readable Python, imports only torch
    net = model.load()                                    # with its weights, in eval mode
"""

import argparse
import os

import torch

import automtl
from automtl import Policy
from automtl.export.onnx import run_onnx


def _model(run_dir):
    if run_dir:
        model, meta = automtl.load_run(run_dir)
        shape = (meta.get("spec") or {}).get("input_shape")
        return model, tuple(shape) if shape else None
    sm = automtl.compile("resnet18.prototxt", ["seg", "depth", "normal"], example_input=torch.randn(2, 3, 64, 64))
    return sm.derive(Policy.sample(sm, seed=0)).eval(), (3, 64, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished search run directory")
    parser.add_argument("--out", default="exported", help="folder for model.onnx, model.pt and python/")
    parser.add_argument("--size", type=int, nargs=3, metavar=("C", "H", "W"), help="input shape when the run does not record it")
    args = parser.parse_args()

    model, shape = _model(args.run)
    shape = tuple(args.size) if args.size else shape
    if shape is None:
        parser.error("this run does not record its input shape; give --size C H W")
    x = torch.randn(2, *shape)
    print(f"{type(model).__name__}: tasks {', '.join(model.task_names)}; {model.num_parameters():,} parameters")
    with torch.no_grad():
        expected = model(x)

    onnx_path = automtl.export_onnx(model, os.path.join(args.out, "model.onnx"), x)
    got = run_onnx(onnx_path, x)
    error = max(float((got[t] - expected[t]).abs().max()) for t in expected)
    print(f"ONNX (onnxruntime) max |output - PyTorch| = {error:.2e}")
    script_path = automtl.export_torchscript(model, os.path.join(args.out, "model.pt"), example_input=x)
    source_path = automtl.export_python(model, os.path.join(args.out, "python"), x)
    print("TorchScript and Python: checked against PyTorch by the exporters")
    print(f"written: {onnx_path}, {script_path}, {source_path}")


if __name__ == "__main__":
    main()
