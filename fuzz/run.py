"""Run the coverage-guided fuzzers for a bounded time and report what they found.

    pip install atheris            # or: pip install -e ".[fuzz]"
    python fuzz/run.py --seconds 60                      # every target, 60 s in all
    python fuzz/run.py --seconds 300 --targets prototxt  # one target
    python fuzz/run.py --reproduce WORKDIR/prototxt/crash-... --targets prototxt

The real prototxt files (``tests/corpus``, plus ``../shared/corpus/prototxt`` and
``$AUTOMTL_CORPUS`` when they exist; or ``--seeds FOLDER``) are *copied* into the working folder
as the seed corpus; the originals are never touched. Each target runs
in its own process under libFuzzer with a per-input time limit (``--timeout``) and a memory
limit, so a hang or a blow-up is reported as a finding, not waited out. Prints, per target,
how many inputs ran and where any crash input was saved; exits 1 when there is a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Union

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = ("prototxt", "prototxt_gen", "cnn")
#: share of the time each target gets when several run
WEIGHTS = {"prototxt": 2, "prototxt_gen": 1, "cnn": 1}


def default_seeds() -> List[str]:
    """The real prototxt files the tests use (tests/prototxt_corpus.py): the repository's
    ``tests/corpus`` and whatever ``../shared/corpus/prototxt`` and ``$AUTOMTL_CORPUS`` add."""
    tests = os.path.join(ROOT, "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from prototxt_corpus import corpus_files

    return list(corpus_files().values())


def seed_files(seeds: Union[str, Sequence[str]]) -> List[str]:
    """The ``.prototxt`` files of the folder ``seeds``, or ``seeds`` itself when it is a list."""
    if isinstance(seeds, str):
        if not os.path.isdir(seeds):
            return []
        return [os.path.join(seeds, n) for n in sorted(os.listdir(seeds)) if n.endswith(".prototxt")]
    return list(seeds)


def copy_seeds(seeds: Union[str, Sequence[str]], corpus: str) -> int:
    """Copy the seed files (see :func:`seed_files`) into ``corpus`` (contents only: the copies
    are ours to mutate). Returns how many."""
    os.makedirs(corpus, exist_ok=True)
    files = seed_files(seeds)
    for path in files:
        shutil.copyfile(path, os.path.join(corpus, os.path.basename(path)))
    return len(files)


def write_dictionary(path: str) -> None:
    """A libFuzzer dictionary of the schema's field and enum names, the layer types and edge
    numbers, so byte mutations make words the parser knows."""
    sys.path.insert(0, ROOT)
    from automtl.compiler.prototxt.layers import supported_types
    from automtl.proto import automtl_pb2

    words = set()

    def visit(descriptor) -> None:
        for field in descriptor.fields:
            words.add(field.name + ":")
            words.add(field.name + " {")
        for enum in descriptor.enum_types:
            words.update(v.name for v in enum.values)
        for nested in descriptor.nested_types:
            visit(nested)

    for message in automtl_pb2.DESCRIPTOR.message_types_by_name.values():
        visit(message)
    words.update(f'type: "{t}"' for t in supported_types() + ["Python", "SoftmaxWithLoss"])
    words.update(["layer {", "layers {", "}", "{", '"', "#", "bottom: ", "top: ", "-1", "0", "4294967295",
                  "2147483647", "9223372036854775807", "1e38", "nan", "inf", "-inf", "true", "false"])
    with open(path, "w", encoding="utf-8") as f:
        for word in sorted(words):
            f.write('"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"\n')


def _runs(log: str) -> int:
    found = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    if found:
        return int(found[-1])
    counts = re.findall(r"^#(\d+)\s", log, re.M)
    return int(counts[-1]) if counts else 0


def run_target(target: str, seconds: int, workdir: str, seeds: Union[str, Sequence[str]], timeout: int, rss_mb: int) -> Dict[str, object]:
    folder = os.path.join(workdir, target)
    corpus = os.path.join(folder, "corpus")
    artifacts = os.path.join(folder, "findings")
    os.makedirs(artifacts, exist_ok=True)
    flags = [
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}",
        f"-artifact_prefix={artifacts}{os.sep}",
        "-print_final_stats=1",
    ]
    seeded = 0
    if target == "prototxt":
        seeded = copy_seeds(seeds, corpus)
        dictionary = os.path.join(workdir, "prototxt.dict")
        write_dictionary(dictionary)
        flags += [f"-dict={dictionary}", "-max_len=131072"]
    os.makedirs(corpus, exist_ok=True)
    before = set(os.listdir(artifacts))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    log_path = os.path.join(folder, "fuzz.log")
    started = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            done = subprocess.run(
                [sys.executable, os.path.join(HERE, "targets.py"), target, *flags, corpus],
                stdout=log, stderr=subprocess.STDOUT, env=env, timeout=seconds + timeout + 300,
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "killed: ran past its time"
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    findings = sorted(set(os.listdir(artifacts)) - before)
    return {
        "target": target,
        "seconds": round(time.time() - started, 1),
        "inputs": _runs(text),
        "seeds": seeded,
        "corpus": len(os.listdir(corpus)),
        "exit": code,
        "findings": [os.path.join(artifacts, f) for f in findings],
        "log": log_path,
    }


def split_time(seconds: int, targets: List[str]) -> Dict[str, int]:
    total = sum(WEIGHTS[t] for t in targets)
    return {t: max(5, seconds * WEIGHTS[t] // total) for t in targets}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz automtl's front ends for a bounded time (atheris).")
    parser.add_argument("--seconds", type=int, default=60, help="total fuzzing time, split among the targets")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, from {', '.join(TARGETS)}")
    parser.add_argument("--workdir", help="working folder (corpus copies, findings, logs); default: a new temporary one")
    parser.add_argument("--seeds", help="folder of real .prototxt files to seed from (copied); default: tests/corpus, "
                        "plus ../shared/corpus/prototxt and $AUTOMTL_CORPUS when they exist")
    parser.add_argument("--timeout", type=int, default=20, help="seconds one input may take before it counts as a hang")
    parser.add_argument("--rss-mb", type=int, default=4096, help="memory limit of a fuzzing process, MiB")
    parser.add_argument("--reproduce", metavar="INPUT", help="run one saved input through the (single) target and show the error")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"unknown target(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TARGETS)}")
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz/run.py needs atheris: pip install atheris (or pip install -e '.[fuzz]')", file=sys.stderr)
        return 2
    if args.reproduce:
        if len(targets) != 1:
            parser.error("--reproduce needs exactly one --targets")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        return subprocess.call([sys.executable, os.path.join(HERE, "targets.py"), targets[0], args.reproduce], env=env)

    workdir = args.workdir or tempfile.mkdtemp(prefix="automtl-fuzz-")
    os.makedirs(workdir, exist_ok=True)
    results = []
    for target, seconds in split_time(args.seconds, targets).items():
        print(f"fuzzing {target} for {seconds} s ...", flush=True)
        results.append(run_target(target, seconds, workdir, args.seeds or default_seeds(), args.timeout, args.rss_mb))
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(f"\n{'target':<14}{'seconds':>9}{'inputs':>10}{'corpus':>8}  findings")
    for r in results:
        print(f"{r['target']:<14}{r['seconds']:>9}{r['inputs']:>10}{r['corpus']:>8}  {len(r['findings']) or 'none'}")
        for path in r["findings"]:
            print(f"    {path}  (python fuzz/run.py --targets {r['target']} --reproduce {path}; log {r['log']})")
    print(f"working folder: {workdir}")
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
