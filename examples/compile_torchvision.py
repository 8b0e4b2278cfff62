"""Compile a torchvision backbone into a multi-task supermodel and derive fixed models.

    python examples/compile_torchvision.py [--arch resnet34] [--tasks seg depth normal]

Prints the supermodel's summary, then derives the all-shared, all-own and a sampled policy and
checks that the all-shared model reproduces the backbone exactly.
"""

import argparse

import torch
import torchvision

import automtl
from automtl import Policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet34", help="a torchvision classification model name")
    parser.add_argument("--tasks", nargs="+", default=["seg", "depth"])
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    args = parser.parse_args()

    backbone = torchvision.models.get_model(args.arch, weights=None).eval()
    x = torch.randn(2, 3, args.size, args.size)
    sm = automtl.compile(backbone, args.tasks, example_input=x, norm="follow").eval()
    print(sm.summary())

    with torch.no_grad():
        reference = backbone(x)
        for name, policy in [
            ("all-shared", Policy.all_shared(sm)),
            ("all-own", Policy.all_own(sm)),
            ("sampled", Policy.sample(sm, seed=0)),
        ]:
            model = sm.derive(policy).eval()
            out = model(x)
            error = max(float((out[t] - reference).abs().max()) for t in args.tasks)
            print(f"{name:10s} parameters {model.num_parameters():>12,}   max |output - backbone| = {error:.2e}")


if __name__ == "__main__":
    main()
