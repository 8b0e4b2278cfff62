"""Run the Python examples of the README and the manual, as a reader would.

    python tests/docs_examples.py --report report.json README.md docs/guide/search.md ...

Every ```python block of a page runs, in the page's order, in one namespace per page (a later
block uses what an earlier one defined) and in a fresh temporary working folder per page (an
example that writes ``runs/x`` or ``model.onnx`` writes it there). A block is left out only
when the line above its fence says why: ``<!-- not run: needs a CUDA device -->``.

Each page's outcome goes to the JSON report: ``{page: {"ok": bool, "error": traceback or "",
"blocks": number run, "skipped": number left out, "seconds": float}}``. tests/test_docs.py runs
this in a subprocess, so that what the examples change process-wide (allocator settings,
registered modules, torch's thread count) stays out of the test process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
from typing import Dict, List, NamedTuple, Optional

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<lang>[\w+-]*)[^\n`]*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")


class Example(NamedTuple):
    line: int  # 1-based line of the first line of code
    code: str
    skip: Optional[str]  # why it is not run, or None


def python_blocks(text: str) -> List[Example]:
    """The ```python blocks of a Markdown text, with the reason each skipped one gives."""
    lines = text.split("\n")
    blocks: List[Example] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent = match["fence"], match["indent"]
        end = i + 1
        while end < len(lines) and not re.match(rf"^{re.escape(indent)}{fence}`*\s*$", lines[end]):
            end += 1
        if match["lang"] == "python":
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            skip = NOT_RUN.match(previous)
            body = [line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1 : end]]
            blocks.append(Example(i + 2, "\n".join(body), skip["reason"] if skip else None))
        i = end + 1
    return blocks


def run_page(path: str, root: str) -> Dict[str, object]:
    """Run one page's examples; its outcome for the report."""
    with open(path, encoding="utf-8") as f:
        examples = python_blocks(f.read())
    name = os.path.relpath(path, root)
    namespace: Dict[str, object] = {"__name__": "__docs_example__"}
    started = time.perf_counter()
    ran = skipped = 0
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="docs-example-") as folder:
        os.chdir(folder)
        try:
            for example in examples:
                if example.skip is not None:
                    skipped += 1
                    if not example.skip:
                        raise ValueError(f"{name} line {example.line - 1}: '<!-- not run: -->' gives no reason")
                    continue
                # padded so that a traceback names the page's own line numbers
                code = compile("\n" * (example.line - 1) + example.code, name, "exec")
                exec(code, namespace)
                ran += 1
        except BaseException:  # noqa: BLE001 - reported, the next page still runs
            return {"ok": False, "error": traceback.format_exc(limit=-8), "blocks": ran, "skipped": skipped,
                    "seconds": time.perf_counter() - started}
        finally:
            os.chdir(here)
    return {"ok": True, "error": "", "blocks": ran, "skipped": skipped, "seconds": time.perf_counter() - started}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", help="Markdown files")
    parser.add_argument("--report", required=True, help="JSON file for the outcome of every page")
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = parser.parse_args(argv)
    report = {}
    for page in args.pages:
        report[os.path.relpath(page, args.root)] = outcome = run_page(page, args.root)
        print(f"{os.path.relpath(page, args.root)}: {'ok' if outcome['ok'] else 'FAILED'} "
              f"({outcome['blocks']} block(s), {outcome['seconds']:.1f} s)", flush=True)
    with open(args.report, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return 0 if all(o["ok"] for o in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
