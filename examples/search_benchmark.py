"""Search a sharing policy on a built-in benchmark from Python, then load the model it found.

    python examples/search_benchmark.py [--benchmark scenes] [--out runs/example] [--steps 40]

The same run as ``automtl search --benchmark scenes``, with fewer steps so it finishes in about
a minute on a laptop CPU: the three stages (pre-train, policy-train, post-train) write their
metrics, policy, checkpoints and final model to ``--out``; the derived model is then loaded back
with :func:`automtl.load_run` and applied to a batch of test images.
"""

import argparse

import torch

import automtl
from automtl.data import get_benchmark
from automtl.search.presets import preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="scenes", choices=["scenes", "multi-mnist"])
    parser.add_argument("--out", default="runs/example", help="run directory (must not hold a finished run)")
    parser.add_argument("--steps", type=int, default=40, help="steps per stage (the preset's are longer)")
    args = parser.parse_args()

    # the benchmark's preset (backbone, tasks, optimisers) with shorter stages on top
    config = preset(args.benchmark)
    config["pretrain"]["steps"] = args.steps
    config["policy_train"]["steps"] = 2 * args.steps
    config["post_train"]["steps"] = args.steps
    config["logging"] = {"log_every": 10, "eval_every": 0, "checkpoint_every": args.steps}

    result = automtl.search(config=config, out=args.out)
    print(f"policy found: {result.policy}")
    for task, metrics in (result.metrics or {}).items():
        print(f"  {task}: " + ", ".join(f"{name} {value:.2f}" for name, value in metrics.items()))

    model, meta = automtl.load_run(args.out)
    data = get_benchmark(args.benchmark, n_train=8, n_val=8, n_test=8)
    images = torch.stack([data.test[i][0] for i in range(4)])
    with torch.no_grad():
        outputs = model(images)
    print(f"reloaded model: {meta['parameters']:,} parameters; outputs "
          + ", ".join(f"{t} {tuple(v.shape)}" for t, v in outputs.items()))


if __name__ == "__main__":
    main()
