"""Re-create the tables and figures of the README and the manual from the commands that print them.

    python bench/readme.py                  # run every block's command, rewrite the files
    python bench/readme.py --list           # the blocks: name, kind, file, command
    python bench/readme.py --only search-scenes --only compare-scenes
    python bench/readme.py --check          # re-run, report differences, write nothing
    python bench/readme.py --reuse          # take a block's file from a run directory left by
                                            # an earlier run of its command, where there is one

The blocks live in README.md and in the manual's pages, docs/**/*.md (``--file PATH``,
repeatable, reads only the files named). Every generated block sits between two marker lines:

    <!-- generated NAME KIND: COMMAND -->
    ...
    <!-- end generated NAME -->

or, for a command that writes the block into a file rather than printing it,

    <!-- generated NAME KIND: COMMAND => FILE -->

NAME is a short name (letters, digits, ``-``, ``_``, ``.``), unique across all the files, so a
block can move from the README to a page of the manual and keep its name. KIND says what of the
block a re-run must reproduce:

* ``deterministic`` - all of it (parameter counts, MACs, shapes: no training, no clock);
  ``--check`` fails on any difference.
* ``trained`` - a results table from training: its rows, its columns and its parameter and
  MACs columns are exact (``--check`` fails when they differ); metrics are reported only.
* ``timed`` - timings of this machine: differences are reported, never an error.

Without ``=> FILE`` the block is the command's standard output, fenced as ``text``. With it,
the block is FILE's text (e.g. a run's ``table.md``, a markdown table); when FILE lies in the
command's ``--out`` folder, the command runs with ``--out`` in a fresh temporary folder, so an
existing run directory is never overwritten or resumed. Commands run from the repository root;
``automtl`` is the installed console script, ``python`` this interpreter.

Each file holding a rewritten block is rewritten atomically (a temporary file renamed over it),
once, after every command has run, and re-read just before: edits made to other parts of it
meanwhile are kept. When a command fails, no file is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from automtl.errors import ConfigError
from automtl.io import atomic_write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
KINDS = ("deterministic", "trained", "timed")

_START = re.compile(r"^<!-- generated (?P<name>[A-Za-z0-9_.-]+) (?P<kind>\w+): (?P<command>.+?)(?: => (?P<file>\S+))? -->$")
_END = re.compile(r"^<!-- end generated (?P<name>[A-Za-z0-9_.-]+) -->$")
_ANY_MARKER = re.compile(r"^\s*<!--\s*(end\s+)?generated\b")


@dataclasses.dataclass
class Block:
    name: str
    kind: str
    command: str
    file: Optional[str]
    start: int  # 0-based index of the start marker line
    end: int  # 0-based index of the end marker line
    text: str  # the lines between the markers, joined, without a final newline
    source: str = "README.md"  # the file, as messages name it
    path: str = README  # the file on disk

    def describe(self) -> str:
        return f"{self.command}" + (f" => {self.file}" if self.file else "")


def parse_blocks(text: str, source: str = "README.md") -> List[Block]:
    """The generated blocks of ``text``; a malformed, unbalanced, nested or duplicated marker
    is a ConfigError naming the line."""
    lines = text.split("\n")
    blocks: List[Block] = []
    names: Dict[str, int] = {}
    open_: Optional[Tuple[re.Match, int]] = None
    for i, line in enumerate(lines):
        if not _ANY_MARKER.match(line):
            continue
        where = f"{source} line {i + 1}"
        start, end = _START.match(line), _END.match(line)
        if start:
            if open_ is not None:
                raise ConfigError(f"{where}: block {start['name']!r} starts inside block {open_[0]['name']!r} "
                                  f"(opened at line {open_[1] + 1}); add '<!-- end generated {open_[0]['name']} -->' before it")
            if start["kind"] not in KINDS:
                raise ConfigError(f"{where}: unknown kind {start['kind']!r} of block {start['name']!r}; use one of {', '.join(KINDS)}")
            if start["name"] in names:
                raise ConfigError(f"{where}: block name {start['name']!r} is already used at line {names[start['name']]}; give it another name")
            names[start["name"]] = i + 1
            open_ = (start, i)
        elif end:
            if open_ is None:
                raise ConfigError(f"{where}: '<!-- end generated {end['name']} -->' closes no open block; "
                                  f"add '<!-- generated {end['name']} KIND: COMMAND -->' above it or remove it")
            if end["name"] != open_[0]["name"]:
                raise ConfigError(f"{where}: end of block {end['name']!r}, but the open block is {open_[0]['name']!r} "
                                  f"(opened at line {open_[1] + 1})")
            match, first = open_
            blocks.append(Block(match["name"], match["kind"], match["command"].strip(), match["file"], first, i,
                                "\n".join(lines[first + 1 : i]), source))
            open_ = None
        else:
            raise ConfigError(f"{where}: malformed marker {line.strip()!r}; write '<!-- generated NAME KIND: COMMAND [=> FILE] -->' "
                              f"(KIND: {', '.join(KINDS)}) or '<!-- end generated NAME -->', each on a line of its own")
    if open_ is not None:
        raise ConfigError(f"{source} line {open_[1] + 1}: block {open_[0]['name']!r} is never closed; "
                          f"add '<!-- end generated {open_[0]['name']} -->' after it")
    return blocks


def document_files(root: str = ROOT) -> List[str]:
    """README.md and every Markdown page of the manual (docs/**/*.md), in a fixed order."""
    pages = []
    for folder, dirs, files in os.walk(os.path.join(root, "docs")):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))  # docs/_hooks: the build's code
        pages += [os.path.join(folder, f) for f in sorted(files) if f.endswith(".md")]
    return [os.path.join(root, "README.md")] + pages


def display_name(path: str, base: str = ROOT) -> str:
    """``path`` as messages name it: relative to the repository (or to ``base``)."""
    relative = os.path.relpath(os.path.abspath(path), base)
    return relative if not relative.startswith("..") else os.path.basename(path)


def collect_blocks(paths: Sequence[str], base: Optional[str] = None) -> List[Block]:
    """The generated blocks of every file of ``paths``, in file order; a block name used twice,
    in one file or in two, is a ConfigError naming both places."""
    if base is None:
        base = ROOT if all(not os.path.relpath(os.path.abspath(p), ROOT).startswith("..") for p in paths) \
            else os.path.dirname(os.path.abspath(paths[0]))
    blocks: List[Block] = []
    seen: Dict[str, Block] = {}
    for path in paths:
        source = display_name(path, base)
        for block in parse_blocks(_read_all(path), source):
            block.path = path
            if block.name in seen:
                other = seen[block.name]
                raise ConfigError(f"{source} line {block.start + 1}: block name {block.name!r} is already used in "
                                  f"{other.source} line {other.start + 1}; give it another name")
            seen[block.name] = block
            blocks.append(block)
    return blocks


def replace_blocks(text: str, new: Dict[str, str], source: str = "README.md") -> str:
    """``text`` with the content of the blocks named in ``new`` replaced (markers kept)."""
    blocks = parse_blocks(text, source)
    missing = sorted(set(new) - {b.name for b in blocks})
    if missing:
        raise ConfigError(f"{source}: no generated block named {', '.join(missing)} (it was removed or renamed meanwhile?)")
    lines = text.split("\n")
    for block in sorted(blocks, key=lambda b: b.start, reverse=True):
        if block.name in new:
            lines[block.start + 1 : block.end] = new[block.name].split("\n")
    return "\n".join(lines)


def _argv(command: str) -> List[str]:
    argv = shlex.split(command)
    if not argv:
        raise ConfigError("empty command")
    if argv[0] == "python":
        argv[0] = sys.executable
    elif shutil.which(argv[0]) is None:
        raise ConfigError(f"{argv[0]!r} is not on PATH (install the package: pip install -c constraints.txt -e .)")
    return argv


def out_folder(argv: Sequence[str]) -> Optional[Tuple[int, str]]:
    """(index, value) of the command's ``--out`` value, if it has one."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if arg.startswith("--out="):
            return i, arg[len("--out="):]
    return None


def run_block(block: Block, reuse: bool = False, log=sys.stderr) -> str:
    """What the block should hold now: the command's output (or the file it wrote)."""
    argv = _argv(block.command)
    if block.file is None:
        print(f"[{block.name}] {block.command}", file=log, flush=True)
        done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise ConfigError(f"block {block.name!r}: {block.command!r} exited with status {done.returncode}")
        return "```text\n" + done.stdout.strip("\n") + "\n```"
    if reuse and os.path.isfile(os.path.join(ROOT, block.file)):
        print(f"[{block.name}] reusing {block.file}", file=log, flush=True)
        return _read(os.path.join(ROOT, block.file))
    out = out_folder(argv)
    rel = os.path.relpath(os.path.normpath(block.file), os.path.normpath(out[1])) if out else None
    with tempfile.TemporaryDirectory(prefix="readme-") as tmp:
        if rel is not None and not rel.startswith(".."):
            run_dir = os.path.join(tmp, "run")
            argv = list(argv)
            argv[out[0]] = run_dir if argv[out[0]] == out[1] else f"--out={run_dir}"
            produced = os.path.join(run_dir, rel)
        else:
            produced = os.path.join(ROOT, block.file)
        print(f"[{block.name}] {shlex.join(argv)}", file=log, flush=True)
        done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            raise ConfigError(f"block {block.name!r}: {block.command!r} exited with status {done.returncode}")
        if not os.path.isfile(produced):
            raise ConfigError(f"block {block.name!r}: {block.command!r} wrote no {block.file}")
        return _read(produced)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip("\n")


# ---- comparing a block with a re-run ------------------------------------------------------


def parse_table(text: str) -> Tuple[List[str], List[List[str]]]:
    """(header, body rows) of the first markdown table in ``text``, cells stripped."""
    rows = [line for line in text.split("\n") if line.lstrip().startswith("|")]
    if len(rows) < 2:
        raise ConfigError("no markdown table (a header line, a '|---|' line and rows)")

    def cells(line: str) -> List[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    return cells(rows[0]), [cells(r) for r in rows[2:]]


def exact_column(header: str) -> bool:
    """Parameter counts, their ratio to single-task and MACs: fixed by the policy, no noise."""
    return bool(re.search(r"param|macs?\b|flops?\b", header, re.IGNORECASE))


def timed_column(header: str) -> bool:
    return bool(re.search(r"\btime\b|\(s\)$", header, re.IGNORECASE))


def _number(cell: str) -> Optional[float]:
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return None


def table_differences(readme: str, run: str, tolerance=None) -> Tuple[List[str], List[str]]:
    """(errors, notes) between a results table in the README and one a re-run wrote. Errors:
    other columns or rows, or a differing parameter/MACs cell, or a non-numeric cell; and, with
    ``tolerance(column, readme_value) -> allowed difference``, a metric outside it. Notes: every other
    differing metric. Timing columns are ignored."""
    errors: List[str] = []
    notes: List[str] = []
    header, body = parse_table(readme)
    run_header, run_body = parse_table(run)
    if header != run_header:
        errors.append(f"columns differ:\n  README: {header}\n  run:    {run_header}")
        return errors, notes
    names, run_names = [r[0] for r in body], [r[0] for r in run_body]
    if names != run_names:
        errors.append(f"rows differ: README {names}, run {run_names}")
        return errors, notes
    for row, run_row in zip(body, run_body):
        if len(row) != len(header) or len(run_row) != len(header):
            errors.append(f"row {row[0]!r}: {len(row)} cells in the README, {len(run_row)} in the run, {len(header)} columns")
            continue
        for column, cell, run_cell in zip(header[1:], row[1:], run_row[1:]):
            if cell == run_cell or timed_column(column):
                continue
            where = f"{row[0]} / {column}: README {cell}, run {run_cell}"
            a, b = _number(cell), _number(run_cell)
            if exact_column(column) or a is None or b is None:
                errors.append(where)
            elif tolerance is not None and abs(a - b) > tolerance(column, a):
                errors.append(f"{where} (more than {tolerance(column, a):.4g} apart)")
            else:
                notes.append(where)
    return errors, notes


def block_differences(block: Block, new: str) -> Tuple[List[str], List[str]]:
    """(errors, notes): what of ``new`` differs from the block's text, by the block's kind."""
    if block.text == new:
        return [], []
    diff = "\n".join(difflib.unified_diff(block.text.split("\n"), new.split("\n"), block.source, "re-run", lineterm="", n=1))
    if block.kind == "deterministic":
        return [diff], []
    if block.kind == "trained":
        try:
            errors, notes = table_differences(block.text, new)
        except ConfigError as exc:
            return [f"{exc}\n{diff}"], []
        return errors, notes or [diff]
    return [], [diff]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="only this block (repeatable, or comma-separated)")
    parser.add_argument("--check", action="store_true",
                        help="re-run and report differences without writing; exit 1 when a deterministic part differs")
    parser.add_argument("--list", action="store_true", help="list the blocks and exit")
    parser.add_argument("--reuse", action="store_true",
                        help="a block with '=> FILE' takes FILE from the repository (a run left by the command) where it exists")
    parser.add_argument("--file", "--readme", dest="files", action="append", metavar="PATH",
                        help="only the blocks of this Markdown file (repeatable; default: README.md and docs/**/*.md)")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except ConfigError as exc:
        print(f"bench/readme.py: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    paths = args.files or document_files()
    blocks = collect_blocks(paths)
    if args.list:
        for block in blocks:
            print(f"{block.name:24s} {block.kind:13s} {block.source:24s} {block.describe()}")
        return 0
    wanted = [n.strip() for text in args.only for n in text.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {b.name for b in blocks}]
    if unknown:
        where = blocks[0].source if len(paths) == 1 and blocks else ", ".join(display_name(p) for p in paths[:1]) + (" ..." if len(paths) > 1 else "")
        raise ConfigError(f"no block named {', '.join(unknown)} in {where}; --list shows them: {', '.join(b.name for b in blocks)}")
    chosen = [b for b in blocks if not wanted or b.name in wanted]
    new = {block.name: run_block(block, reuse=args.reuse) for block in chosen}
    if args.check:
        failed = False
        for block in chosen:
            errors, notes = block_differences(block, new[block.name])
            for line in errors:
                print(f"[{block.name}] DIFFERS ({block.kind}): {line}")
            for line in notes:
                print(f"[{block.name}] differs ({block.kind}, not an error): {line}")
            if not errors and not notes:
                print(f"[{block.name}] same")
            failed |= bool(errors)
        return 1 if failed else 0
    # re-read: the commands take minutes, and the files may have been edited meanwhile; every
    # file is checked before any is written, so a block removed meanwhile writes nothing
    writes = []
    for path in dict.fromkeys(block.path for block in chosen):
        mine = {b.name: new[b.name] for b in chosen if b.path == path}
        text = _read_all(path)
        updated = replace_blocks(text, mine, next(b.source for b in chosen if b.path == path))
        if updated != text:
            writes.append((path, updated))
    for path, updated in writes:
        atomic_write_text(path, updated)
    for block in chosen:
        print(f"[{block.name}] {'unchanged' if block.text == new[block.name] else 'rewritten'}")
    return 0


def _read_all(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


if __name__ == "__main__":
    sys.exit(main())
