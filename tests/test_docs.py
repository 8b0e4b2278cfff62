"""The manual (docs/, mkdocs.yml) builds, and what it says still holds (issue 19).

* the site builds with ``mkdocs build --strict``: every page in the navigation, every link and
  anchor resolves, every ``::: automtl.NAME`` of the API pages names an object that exists;
* the command-line page is written from the argparse parsers: a renamed flag changes it, a
  command without a section fails the build;
* the Python examples of the README and of every page run (tests/docs_examples.py);
* every flag a command line of the docs passes exists in that command's parser, and every
  dotted ``automtl.`` name quoted in code imports;
* the API reference covers ``automtl.__all__``; the README's links lead to files.
"""

import argparse
import ast
import functools
import glob
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from automtl.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cli_reference = _load("docs_cli_reference", os.path.join(DOCS, "_hooks", "cli_reference.py"))
examples = _load("docs_examples", os.path.join(ROOT, "tests", "docs_examples.py"))
griffe_roles = _load("docs_griffe_roles", os.path.join(DOCS, "_hooks", "griffe_roles.py"))
api_sources = _load("docs_api_sources", os.path.join(DOCS, "_hooks", "api_sources.py"))


def _pages():
    """README.md and every Markdown page of the manual, relative to the repository."""
    pages = ["README.md"]
    for path in sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True)):
        relative = os.path.relpath(path, ROOT)
        if not relative.startswith(os.path.join("docs", "_")):
            pages.append(relative)
    return pages


def _read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


# ---- the site builds without a warning ----------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built as the README says (``mkdocs build --strict``) into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-6000:]}"
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    return out


def _html(site, page):
    with open(os.path.join(site, page, "index.html"), encoding="utf-8") as f:
        return f.read()


@pytest.mark.slow
def test_site_builds_strict_with_every_page(site):
    for page in _pages()[1:]:
        if page.startswith(os.path.join("docs", "_")):
            continue
        html_dir = os.path.splitext(os.path.relpath(page, "docs"))[0]
        html_dir = "" if html_dir == "index" else html_dir.removesuffix("/index")
        assert os.path.isfile(os.path.join(site, html_dir, "index.html")), f"{page} was not built"
    assert not os.path.exists(os.path.join(site, "_hooks"))  # the build's code is not published


@pytest.mark.slow
def test_cli_page_holds_every_flag_of_the_parsers(site):
    html = _html(site, "reference/cli")
    for name, parser in cli_reference.subcommands(build_parser()).items():
        assert f'id="automtl-{name}"' in html
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"<code>{flag}" in html, f"automtl {name} {flag} is missing from the CLI page"


@pytest.mark.slow
def test_api_pages_render_the_docstrings(site):
    html = _html(site, "reference/api/automtl")
    import automtl

    # the first line of compile's docstring, rendered, and its keyword-only arguments in the signature
    assert "Compile <code>backbone</code> into a multi-task" in html
    assert "leaf_modules" in html and "searchable" in html
    assert automtl.Policy.__doc__.split()[0] in html
    benchmarks = _html(site, "benchmarks")
    assert "scenes (test split), seed 0" in benchmarks  # the README's results, included
    assert "--8&lt;--" not in benchmarks and "--8<--" not in benchmarks


# ---- the command-line reference follows the parsers ----------------------------------------------


def _toy_parser(flag="--steps"):
    parser = argparse.ArgumentParser(prog="automtl")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run it", description="Run the thing.\n\nexamples:\n  automtl run --steps 3")
    run.add_argument(flag, type=int, default=3, help="how many <steps> | of it")
    run.add_argument("--quiet", action="store_true", help="no bars")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any key")
    commands.add_parser("other", help="the other one")
    return parser


def test_cli_reference_is_written_from_the_parser():
    page = "# CLI\n\n<!-- cli-reference: automtl -->\n\n## automtl run\n\n<!-- cli-reference: automtl run -->\n\n" \
           "## automtl other\n\n<!-- cli-reference: automtl other -->\n"
    text = cli_reference.expand(page, _toy_parser())
    assert "| [`automtl run`](#automtl-run) | run it |" in text
    assert "| `--steps STEPS` | `3` | how many &lt;steps&gt; \\| of it |" in text
    assert "| `--quiet` |  | no bars |" in text
    assert "| `--set KEY=VALUE` |  | any key (repeatable) |" in text
    assert "```text\nexamples:\n  automtl run --steps 3\n```" in text
    assert "<!-- cli-reference" not in text
    # a renamed flag changes the page; nobody edits it
    renamed = cli_reference.expand(page, _toy_parser("--iterations"))
    assert "`--iterations ITERATIONS`" in renamed and "--steps STEPS" not in renamed


def test_cli_reference_refuses_unknown_and_missing_commands():
    with pytest.raises(ValueError, match=r"'<!-- cli-reference: automtl walk -->' names no command; automtl has run, other"):
        cli_reference.expand("<!-- cli-reference: automtl walk -->\n", _toy_parser(), "cli.md")
    with pytest.raises(ValueError, match=r"cli.md: no '<!-- cli-reference: automtl NAME -->' for other"):
        cli_reference.expand("<!-- cli-reference: automtl run -->\n", _toy_parser(), "cli.md")


def test_cli_page_has_a_section_for_every_command():
    text = cli_reference.expand(_read("docs/reference/cli.md"), build_parser(), "docs/reference/cli.md")
    for name in cli_reference.subcommands(build_parser()):
        assert f"## automtl {name}\n" in text


def test_api_sources_lay_out_the_package_as_it_installs():
    """mkdocstrings reads automtl.compiler from compiler/ (setup.py's package_dir) through the mirror."""
    mirror = api_sources.package_mirror()
    try:
        package = os.path.join(mirror, "automtl")
        assert os.path.samefile(os.path.join(package, "compiler", "prototxt", "__init__.py"),
                                os.path.join(ROOT, "compiler", "prototxt", "__init__.py"))
        assert os.path.samefile(os.path.join(package, "api.py"), os.path.join(ROOT, "automtl", "api.py"))
        assert os.path.isdir(os.path.join(package, "proto"))
    finally:
        api_sources.on_shutdown()
    assert not os.path.exists(mirror)


def test_sphinx_roles_read_as_code():
    text = "See :func:`automtl.search` and :class:`~automtl.policy.Policy`, :mod:`automtl.data`."
    assert griffe_roles.plain_roles(text) == "See `automtl.search` and `Policy`, `automtl.data`."


# ---- the examples run -----------------------------------------------------------------------------


def test_python_blocks_are_found_with_their_skip_reason():
    text = ("x\n\n```python\na = 1\n```\n\n<!-- not run: needs a CUDA device -->\n```python\nb = 2\n```\n"
            "\n```bash\nautomtl search\n```\n* item:\n\n    ```python\n    c = 3\n    ```\n")
    assert examples.python_blocks(text) == [examples.Example(4, "a = 1", None),
                                            examples.Example(9, "b = 2", "needs a CUDA device"),
                                            examples.Example(18, "c = 3", None)]


def test_a_failing_example_names_its_page_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# P\n\n```python\nvalue = 1\n```\n\ntext\n\n```python\nassert value == 2, 'stale'\n```\n")
    outcome = examples.run_page(str(page), str(tmp_path))
    assert not outcome["ok"] and outcome["blocks"] == 1
    assert 'File "page.md", line 10' in outcome["error"] and "AssertionError: stale" in outcome["error"]


@pytest.fixture(scope="module")
def example_report(tmp_path_factory):
    """Every page's examples, run once in a subprocess (what they change process-wide stays there)."""
    report = tmp_path_factory.mktemp("examples") / "report.json"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
    pages = [p for p in _pages() if examples.python_blocks(_read(p))]
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "docs_examples.py"), "--report", str(report),
                           *[os.path.join(ROOT, p) for p in pages]], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert report.exists(), done.stderr[-3000:]
    return json.loads(report.read_text())


def _example_pages():
    return [p for p in _pages() if examples.python_blocks(_read(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", _example_pages())
def test_examples_run(page, example_report):
    outcome = example_report[page]
    assert outcome["ok"], f"an example of {page} fails:\n{outcome['error']}"
    assert outcome["blocks"] >= 1


def test_examples_are_run_not_skipped():
    """Skipping is the exception: most pages with Python run all of it, and a skip says why."""
    blocks = [(p, b) for p in _pages() for b in examples.python_blocks(_read(p))]
    assert len(blocks) >= 12
    skipped = [(p, b.line) for p, b in blocks if b.skip is not None]
    assert len(skipped) <= len(blocks) // 4, f"too many examples are not run: {skipped}"
    assert all(b.skip for _, b in blocks if b.skip is not None)


# ---- flags and names the docs quote exist ---------------------------------------------------------

_FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
_AUTOMTL_COMMAND = re.compile(r"(?:^|[\s(])automtl\s+([a-z][a-z0-9_-]*)")
_SCRIPT = re.compile(r"(?:^|\s)python\s+((?:bench|fuzz|examples|tests)/[\w/.-]+\.py)")
# flags of other programs the docs quote on their own (pytest, pip, torchrun, mkdocs)
_OTHER_PROGRAMS = {"--strict", "--no-deps", "--nproc_per_node", "--randomly-seed", "--logdir", "--python_out"}


def _code(text):
    """(fenced non-Python code lines, inline code spans) of a Markdown text; usage lines
    continued on indented lines (`automtl compile ...` then `    [--out ...]`) are joined."""
    lines, spans = [], []
    in_fence, lang, prose = False, "", []
    for line in text.split("\n"):
        fence = re.match(r"^\s*(`{3,})(\w*)", line)
        if fence:
            in_fence, lang = (not in_fence), fence.group(2)
            continue
        if in_fence:
            if lang == "python":
                continue
            if lines and re.match(r"^\s+[\[-]", line) and not line.lstrip().startswith("- "):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        else:
            prose.append(line)
    for span in re.findall(r"(`+)(.+?)\1", "\n".join(prose), flags=re.S):
        spans.append(span[1].strip())
    return lines, spans


@functools.lru_cache(maxsize=None)
def _script_flags(script):
    """The flags a repository script's argparse parser takes, read from its source (every
    ``add_argument("--flag", ...)``), so that checking them imports nothing."""
    path = os.path.join(ROOT, script)
    assert os.path.isfile(path), f"{script} is named in the docs but does not exist"
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    flags = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            flags.update(arg.value for arg in node.args
                         if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"))
    assert flags, f"{script} defines no --flags with argparse; teach tests/test_docs.py how it reads them"
    return frozenset(flags | {"--help"})


def _command_flags():
    return {name: {flag for action in parser._actions for flag in action.option_strings}
            for name, parser in cli_reference.subcommands(build_parser()).items()}


def _commands_of(text):
    """(program, flags) of each command in a line of code: `automtl CMD` or `python SCRIPT`."""
    for piece in re.split(r"&&|;|\|\||(?<=\s)#", text):
        command, script = _AUTOMTL_COMMAND.search(piece), _SCRIPT.search(piece)
        if command and (not script or command.start() < script.start()):
            yield ("automtl", command.group(1)), _FLAG.findall(piece[command.end():])
        elif script:
            yield ("python", script.group(1)), _FLAG.findall(piece[script.end():])


def test_flags_in_the_docs_exist():
    """A command line of the docs passes only flags its parser has; a flag quoted on its own
    is a flag of some parser the docs use."""
    commands = _command_flags()
    every = set().union(*commands.values()) | _OTHER_PROGRAMS
    problems = []
    for page in _pages():
        lines, spans = _code(_read(page))
        scripts = set()
        for text in lines + spans:
            for (program, name), flags in _commands_of(text):
                if program == "automtl":
                    if name not in commands:
                        problems.append(f"{page}: `automtl {name}` is no command ({text.strip()[:80]})")
                        continue
                    known = commands[name]
                else:
                    scripts.add(name)
                    known = _script_flags(name)
                problems += [f"{page}: {program} {name} has no {flag} ({text.strip()[:80]})" for flag in flags
                             if flag not in known]
        local = every.union(*(_script_flags(s) for s in scripts))
        for span in spans:
            if span.startswith("--"):
                flag = _FLAG.match(span).group(0)
                if flag not in local:
                    problems.append(f"{page}: `{span}` names no flag of automtl or of a script on the page")
    assert not problems, "\n".join(problems)


def test_the_flag_check_catches_a_removed_flag():
    commands = _command_flags()
    line = "automtl search --benchmark scenes --no-such-flag 3 && automtl show runs/x --quiet"
    found = list(_commands_of(line))
    assert found == [(("automtl", "search"), ["--benchmark", "--no-such-flag"]), (("automtl", "show"), ["--quiet"])]
    assert "--no-such-flag" not in commands["search"] and "--quiet" in commands["show"]


def _resolve(dotted):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def test_automtl_names_quoted_in_the_docs_exist():
    problems = []
    for page in _pages():
        lines, spans = _code(_read(page))
        names = set()
        for text in spans + lines:
            names.update(re.findall(r"(?<![\w/.\"'])automtl(?:\.[A-Za-z_]\w*)+", text))
        for name in sorted(names):
            try:
                _resolve(name)
            except (ImportError, AttributeError) as exc:
                problems.append(f"{page}: `{name}` does not exist ({exc})")
    assert not problems, "\n".join(problems)


def test_api_reference_covers_the_public_api():
    import automtl

    page = _read("docs/reference/api/automtl.md")
    documented = set(re.findall(r"^::: automtl\.(\w+)", page, flags=re.M))
    own_pages = {"search": "docs/reference/api/search.md", "errors": "docs/reference/api/errors.md"}
    missing = [name for name in automtl.__all__ if name not in documented and name not in own_pages and name != "__version__"]
    assert not missing, f"automtl.__all__ names without an entry in docs/reference/api/automtl.md: {missing}"
    for name, path in own_pages.items():
        assert f"::: automtl.{name}\n" in _read(path)
    for path in glob.glob(os.path.join(DOCS, "reference", "api", "*.md")):
        for target in re.findall(r"^::: ([\w.]+)", _read(os.path.relpath(path, ROOT)), flags=re.M):
            _resolve(target)  # the strict build fails on these too; this names the page at once


def test_readme_links_lead_to_files():
    text = _read("README.md")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert "docs/getting-started.md" in local
    missing = [link for link in local if not os.path.exists(os.path.join(ROOT, link))]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_stays_short_and_says_how_to_build_the_manual():
    text = _read("README.md")
    assert len(text.splitlines()) <= 200
    assert 'pip install -c constraints.txt -e ".[docs]" && mkdocs build --strict' in text and "mkdocs serve" in text
