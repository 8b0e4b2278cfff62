"""The numbers of the README and the manual trace to commands (issue 15, items 3 and 4).

* bench/readme.py's mechanism: markers, rewriting one block of a copy, --check, bad markers,
  blocks spread over several files (README.md and docs/**/*.md);
* the README's first command, run as written, leaves the results table the README shows
  (rows and columns equal, parameter and MACs columns exact, metrics within a tolerance);
* the deterministic numbers of the README (``deterministic`` blocks; the parameter and MACs
  columns of the rows no training decides) re-computed by cheap runs.

Every expectation is parsed from README.md and the manual's pages as they are, never typed in here.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from automtl.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

_spec = importlib.util.spec_from_file_location("bench_readme", os.path.join(ROOT, "bench", "readme.py"))
readme = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = readme  # dataclasses look their module up there
_spec.loader.exec_module(readme)


def _readme_text():
    with open(README, encoding="utf-8") as f:
        return f.read()


@pytest.fixture
def run_main(capsys):
    """bench/readme.py's main() in this process (its block commands run in subprocesses):
    (exit status, stdout, stderr)."""

    def run(*argv):
        capsys.readouterr()
        code = readme.main(list(argv))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out, err)

    return run


def _py(code):
    """A block command running ``code`` with this interpreter (spelled ``python``)."""
    return "python -c " + shlex.quote(code)


# ---- the mechanism ---------------------------------------------------------------------------

PROSE = "# Title\n\nSome prose with 3 numbers 1 2.\n\n"


def _doc(name, kind, command, body, file=None, after="\nMore prose.\n"):
    target = f" => {file}" if file else ""
    return f"{PROSE}<!-- generated {name} {kind}: {command}{target} -->\n{body}\n<!-- end generated {name} -->\n{after}"


def test_rewrites_only_the_block_and_check_sees_the_difference(tmp_path, run_main):
    doc = tmp_path / "README.md"
    old = _doc("counts", "deterministic", _py("print('| a | b |'); print('| 1 | 2 |')"), "| a | b |\n| 1 | 9 |")
    doc.write_text(old)
    done = run_main("--readme", str(doc), "--check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[counts] DIFFERS (deterministic)" in done.stdout and "-| 1 | 9 |" in done.stdout and "+| 1 | 2 |" in done.stdout
    assert doc.read_text() == old  # --check writes nothing

    done = run_main("--readme", str(doc))
    assert done.returncode == 0, done.stderr
    expected = old.replace("| a | b |\n| 1 | 9 |", "```text\n| a | b |\n| 1 | 2 |\n```")
    assert doc.read_text() == expected  # prose and markers byte for byte, the block replaced
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary file left

    done = run_main("--readme", str(doc), "--check")
    assert done.returncode == 0 and "[counts] same" in done.stdout


def test_only_list_and_unknown_names(tmp_path, run_main):
    doc = tmp_path / "README.md"
    doc.write_text(_doc("one", "timed", _py("print(1)"), "old one")
                   + "<!-- generated two deterministic: " + _py("print(2)") + " -->\nold two\n<!-- end generated two -->\n")
    done = run_main("--readme", str(doc), "--list")
    assert done.returncode == 0
    assert [line.split()[:2] for line in done.stdout.splitlines()] == [["one", "timed"], ["two", "deterministic"]]
    done = run_main("--readme", str(doc), "--only", "two")
    assert done.returncode == 0, done.stderr
    assert "old one" in doc.read_text() and "```text\n2\n```" in doc.read_text()
    done = run_main("--readme", str(doc), "--only", "three")
    assert done.returncode == 2
    assert "no block named three" in done.stderr and "one, two" in done.stderr


def test_timed_block_differences_are_not_errors(tmp_path, run_main):
    doc = tmp_path / "README.md"
    doc.write_text(_doc("clock", "timed", _py("print('1.23 s')"), "```text\n4.56 s\n```"))
    done = run_main("--readme", str(doc), "--check")
    assert done.returncode == 0 and "[clock] differs (timed, not an error)" in done.stdout


TABLE = """**title**

| Model | # Params Abs. (M) | # Params Rel. (%) | t acc ↑ | Δt t ↑ | Δt ↑ | Time (s) |
|---|---:|---:|---:|---:|---:|---:|
| Single-Task | 0.211 | - | 66.01 | +0.0 | +0.0 | 19 |
| AutoMTL | 0.186 | -11.8 | 65.45 | -0.5 | -0.5 | 81 |"""


def _writer(tmp_path, table):
    """A command that, like `automtl search`, writes table.md into its --out folder."""
    script = tmp_path / "writer.py"
    script.write_text("import os, sys\nout = sys.argv[sys.argv.index('--out') + 1]\nos.makedirs(out)\n"
                      f"open(os.path.join(out, 'table.md'), 'w').write({table!r} + '\\n')\n")
    return f"python {shlex.quote(str(script))} --out runs/readme-test-run"


def test_trained_table_from_the_run_folder(tmp_path, run_main):
    doc = tmp_path / "README.md"
    # a metric and the time moved: reported, no error; the file is read from a temporary --out
    moved = TABLE.replace("65.45", "65.80").replace("| 81 |", "| 90 |")
    doc.write_text(_doc("tab", "trained", _writer(tmp_path, moved), TABLE, file="runs/readme-test-run/table.md"))
    done = run_main("--readme", str(doc), "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AutoMTL / t acc ↑: README 65.45, run 65.80" in done.stdout
    assert "Time" not in done.stdout  # timing columns are not compared
    assert not os.path.exists(os.path.join(ROOT, "runs", "readme-test-run"))  # the command's --out went to a temporary folder

    # a parameter count moved: an error
    doc.write_text(_doc("tab", "trained", _writer(tmp_path, TABLE.replace("0.186", "0.187")), TABLE, file="runs/readme-test-run/table.md"))
    done = run_main("--readme", str(doc), "--check")
    assert done.returncode == 1
    assert "[tab] DIFFERS (trained): AutoMTL / # Params Abs. (M): README 0.186, run 0.187" in done.stdout

    # rewriting puts the file's text in the block
    doc.write_text(_doc("tab", "trained", _writer(tmp_path, moved), TABLE, file="runs/readme-test-run/table.md"))
    assert run_main("--readme", str(doc)).returncode == 0
    assert readme.parse_blocks(doc.read_text())[0].text == moved


def test_table_differences_rows_columns_and_tolerance():
    extra_row = TABLE + "\n| Multi-Task | 0.084 | -60.3 | 61.70 | -3.9 | -3.9 | 21 |"
    errors, _ = readme.table_differences(TABLE, extra_row)
    assert errors == ["rows differ: README ['Single-Task', 'AutoMTL'], run ['Single-Task', 'AutoMTL', 'Multi-Task']"]
    errors, _ = readme.table_differences(TABLE, TABLE.replace("| Time (s) |", "| MACs (M) |"))
    assert len(errors) == 1 and errors[0].startswith("columns differ")
    moved = TABLE.replace("65.45", "66.00")
    assert readme.table_differences(TABLE, moved, tolerance=lambda column, value: 1.0) == ([], ["AutoMTL / t acc ↑: README 65.45, run 66.00"])
    errors, _ = readme.table_differences(TABLE, moved, tolerance=lambda column, value: 0.5)
    assert errors == ["AutoMTL / t acc ↑: README 65.45, run 66.00 (more than 0.5 apart)"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a\n<!-- generated x timed: echo -->\nb\n", "README.md line 2: block 'x' is never closed"),
        ("a\nb\n<!-- end generated x -->\n", "README.md line 3: '<!-- end generated x -->' closes no open block"),
        ("<!-- generated x timed: echo -->\n<!-- generated y timed: echo -->\n", "README.md line 2: block 'y' starts inside block 'x' (opened at line 1)"),
        ("<!-- generated x timed: echo -->\n<!-- end generated y -->\n", "README.md line 2: end of block 'y', but the open block is 'x'"),
        ("<!-- generated x sometimes: echo -->\n<!-- end generated x -->\n", "README.md line 1: unknown kind 'sometimes'"),
        ("\n<!-- generated: echo -->\n", "README.md line 2: malformed marker"),
        ("<!-- generated x timed: a -->\n<!-- end generated x -->\n<!-- generated x timed: b -->\n<!-- end generated x -->\n",
         "README.md line 3: block name 'x' is already used at line 1"),
    ],
)
def test_bad_markers_name_the_line(text, message):
    with pytest.raises(ConfigError) as info:
        readme.parse_blocks(text)
    assert str(info.value).startswith(message)


def test_bad_markers_leave_the_file_alone(tmp_path, run_main):
    doc = tmp_path / "README.md"
    doc.write_text("x\n<!-- generated x timed: " + _py("print(1)") + " -->\nold\n")
    done = run_main("--readme", str(doc))
    assert done.returncode == 2
    assert done.stderr.strip() == "bench/readme.py: README.md line 2: block 'x' is never closed; add '<!-- end generated x -->' after it"
    assert doc.read_text() == "x\n<!-- generated x timed: " + _py("print(1)") + " -->\nold\n"


def test_edits_made_while_a_command_runs_are_kept(tmp_path, run_main):
    doc = tmp_path / "README.md"
    # the command itself edits the prose after the block, as another person might meanwhile
    command = _py(f"open({str(doc)!r}, 'a').write('added meanwhile\\n'); print('new')")
    doc.write_text(_doc("b", "timed", command, "old"))
    assert run_main("--readme", str(doc)).returncode == 0
    text = doc.read_text()
    assert text.endswith("More prose.\nadded meanwhile\n") and "```text\nnew\n```" in text


def test_failing_command_writes_nothing(tmp_path, run_main):
    doc = tmp_path / "README.md"
    old = _doc("a", "timed", _py("print('fine')"), "old a") + _doc("b", "timed", _py("import sys; sys.exit(3)"), "old b")
    doc.write_text(old)
    done = run_main("--readme", str(doc))
    assert done.returncode == 2 and "exited with status 3" in done.stderr
    assert doc.read_text() == old


# ---- blocks in several files ----------------------------------------------------------------


def test_blocks_in_several_files(tmp_path, run_main):
    """A block is found, listed, checked and rewritten in whichever file holds it; the other
    files stay byte for byte."""
    (tmp_path / "docs" / "guide").mkdir(parents=True)
    doc = tmp_path / "README.md"
    page = tmp_path / "docs" / "guide" / "page.md"
    doc.write_text(_doc("top", "deterministic", _py("print('top')"), "```text\ntop\n```"))
    page.write_text(_doc("deep", "deterministic", _py("print('new')"), "```text\nold\n```"))
    files = ["--file", str(doc), "--file", str(page)]
    done = run_main(*files, "--list")
    assert done.returncode == 0, done.stderr
    assert [line.split()[:3] for line in done.stdout.splitlines()] == [["top", "deterministic", "README.md"],
                                                                        ["deep", "deterministic", "docs/guide/page.md"]]
    done = run_main(*files, "--check")
    assert done.returncode == 1
    assert "[top] same" in done.stdout and "[deep] DIFFERS (deterministic)" in done.stdout
    assert "--- docs/guide/page.md" in done.stdout  # the diff names the file the block lives in
    before = doc.read_text()
    assert run_main(*files).returncode == 0
    assert doc.read_text() == before
    assert page.read_text() == _doc("deep", "deterministic", _py("print('new')"), "```text\nnew\n```")
    assert sorted(p.name for p in (tmp_path / "docs" / "guide").iterdir()) == ["page.md"]  # no temporary file left


def test_a_block_name_is_unique_across_files(tmp_path, run_main):
    (tmp_path / "docs").mkdir()
    doc, page = tmp_path / "README.md", tmp_path / "docs" / "page.md"
    doc.write_text(_doc("same", "timed", _py("print(1)"), "a"))
    page.write_text("intro\n" + _doc("same", "timed", _py("print(2)"), "b"))
    done = run_main("--file", str(doc), "--file", str(page))
    assert done.returncode == 2
    assert done.stderr.strip() == ("bench/readme.py: docs/page.md line 6: block name 'same' is already used in "
                                   "README.md line 5; give it another name")
    assert doc.read_text() == _doc("same", "timed", _py("print(1)"), "a")


def test_a_failing_command_writes_no_file(tmp_path, run_main):
    (tmp_path / "docs").mkdir()
    doc, page = tmp_path / "README.md", tmp_path / "docs" / "page.md"
    old = _doc("fine", "timed", _py("print('new')"), "old")
    doc.write_text(old)
    page.write_text(_doc("broken", "timed", _py("import sys; sys.exit(4)"), "old"))
    done = run_main("--file", str(doc), "--file", str(page))
    assert done.returncode == 2 and "exited with status 4" in done.stderr
    assert doc.read_text() == old  # the block whose command worked is not written either


def test_default_files_are_the_readme_and_the_manual():
    files = [os.path.relpath(p, ROOT) for p in readme.document_files()]
    assert files[0] == "README.md"
    assert "docs/benchmarks.md" in files and "docs/guide/search.md" in files
    assert not [f for f in files if f.startswith("docs/_hooks")]


# ---- the README and the manual themselves -----------------------------------------------------


def _blocks():
    return readme.collect_blocks(readme.document_files())


def first_command():
    """The `automtl search ...` part of the README's first bash block, as written."""
    match = re.search(r"```bash\n(.*?)\n```", _readme_text(), re.DOTALL)
    assert match, "README.md has no ```bash block"
    parts = [p.strip() for p in match.group(1).split("&&")]
    commands = [p for p in parts if p.startswith("automtl search")]
    assert commands, f"the README's first bash block runs no `automtl search`: {match.group(1)!r}"
    return commands[0]


def test_readme_blocks_name_commands_that_exist():
    blocks = _blocks()
    assert blocks, "README.md and docs/ have no generated blocks"
    for block in blocks:
        argv = shlex.split(block.command)
        if argv[0] == "python":
            assert os.path.isfile(os.path.join(ROOT, argv[1])), f"{block.name}: {argv[1]} does not exist"
        else:
            assert argv[0] == "automtl", f"{block.name}: {block.command!r} is neither `automtl ...` nor `python <script>`"
            from automtl.cli import build_parser

            build_parser().parse_args(argv[1:])  # the command line is one the CLI takes
        if block.file:
            out = readme.out_folder(argv)
            assert out and block.file.startswith(out[1].rstrip("/") + "/"), f"{block.name}: {block.file} is not in the command's --out"
    # the README's first command has its table in the README
    assert first_command() in [b.command for b in blocks if b.source == "README.md"]


# Metrics of the first command within this of the README's value. Same seed, same torch and the
# same thread count give the same numbers bit for bit (tests/search pins that runs are
# reproducible); another CPU (other vector kernels) sums in another order, and ~850 training
# steps carry such differences into the metrics: a few per cent relative on these small CPU
# runs. A changed default that changes the model (norm mode, backbone, tasks, the policy)
# already moves the exact parameter and MACs columns; this bound catches a changed training
# setup (steps, learning rates, data) and broken training, which move the metrics by far more.
METRIC_RELATIVE = 0.05
# Δtᵢ and Δt are means of relative metric differences in per cent: metrics within 5% of theirs
# put them within about 5 points.
DELTA_POINTS = 5.0


def metric_tolerance(column, value):
    if column.startswith("Δt"):
        return DELTA_POINTS
    return METRIC_RELATIVE * abs(value) + 0.5 * 10 ** -_decimals(value)  # plus half a printed digit


def _decimals(value):
    # the table prints 1 decimal from 100, 2 from 1, else 4 (automtl/search/report.py)
    magnitude = abs(value)
    return 1 if magnitude >= 100 else 2 if magnitude >= 1 else 4


@pytest.mark.slow
def test_readme_first_command_leaves_the_readme_table(tmp_path):
    command = first_command()
    block = next(b for b in _blocks() if b.command == command)
    argv = shlex.split(command)
    index, out = readme.out_folder(argv)
    run_dir = tmp_path / "run"
    argv[index] = str(run_dir) if argv[index] == out else f"--out={run_dir}"
    relative = os.path.relpath(block.file, out)
    # the README's numbers were made with torch's default 2 threads on the 2-core machine the
    # README names; the same count here keeps the summation order (the command stays as written)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (run_dir / relative).read_text(encoding="utf-8").strip("\n")
    errors, _ = readme.table_differences(block.text, table, tolerance=metric_tolerance)
    assert not errors, f"`{command}` left a table that is not the README's ({block.name}):\n" + "\n".join(errors)
    # it also printed that table
    header, body = readme.parse_table(table)
    assert all(row[0] in done.stdout for row in body)


# ---- deterministic numbers, re-computed cheaply -------------------------------------------------


@pytest.mark.parametrize("name", [b.name for b in _blocks() if b.kind == "deterministic"])
def test_deterministic_blocks_reproduce(name):
    """Every block marked deterministic: the command's output now is the block, to the byte."""
    block = next(b for b in _blocks() if b.name == name)
    assert readme.run_block(block, log=sys.stdout) == block.text, f"{name} ({block.source}): run python bench/readme.py --only {name}"


# flags of `automtl search` that change training only, never the baselines' models
_TRAINING_ONLY = {"--out", "--quiet", "--draw", "--lambda-reg", "--pretrain-steps", "--policy-steps", "--post-steps",
                  "--batch-size", "--method", "--plots", "--amp"}
# flags both commands take, with the same meaning
# (--seeds: the cheap run makes the same mean ± std table, whose parameter/MACs cells are compared)
_SHARED = {"--benchmark", "--config", "--data-root", "--seed", "--seeds", "--weighting", "--device", "--threads", "--set"}


def _baselines_command(block, out):
    """`automtl compare` training only the Single-Task and Multi-Task rows of ``block``'s command
    for one step: their models (all-own, all-shared) are fixed by the config, not by training,
    so their parameter and MACs cells come out as in the full run."""
    argv = shlex.split(block.command)
    assert argv[:2] in (["automtl", "search"], ["automtl", "compare"]), f"{block.name}: no cheap baseline command for {block.command!r}"
    keep, i = [], 2
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        takes_value = "=" not in argv[i] and flag not in ("--quiet", "--plots", "--amp")
        value = argv[i : i + 1 + takes_value]
        if flag in _SHARED:
            keep += value
        elif flag not in _TRAINING_ONLY and flag != "--methods":
            pytest.fail(f"{block.name}: {flag} may change the baselines; teach _baselines_command about it")
        i += len(value)
    return ["automtl", "compare", *keep, "--methods", "single,multi", "--set", "post_train.steps=1",
            "--set", "data.max_eval_batches=1", "--quiet", "--out", str(out)]


def _baseline_blocks():
    return [b for b in _blocks() if b.kind == "trained" and shlex.split(b.command)[:2] in (["automtl", "search"], ["automtl", "compare"])]


@pytest.mark.slow
@pytest.mark.parametrize("name", [b.name for b in _baseline_blocks()])
def test_baseline_parameters_and_macs_as_in_the_readme(name, tmp_path):
    block = next(b for b in _blocks() if b.name == name)
    done = subprocess.run(_baselines_command(block, tmp_path / "run"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    header, body = readme.parse_table(block.text)
    run_header, run_body = readme.parse_table((tmp_path / "run" / "table.md").read_text(encoding="utf-8"))
    exact = [c for c in run_header if readme.exact_column(c)]
    assert exact and [c for c in header if readme.exact_column(c)] == exact, (
        f"{name}: the README's parameter/MACs columns are not the ones the command writes; "
        f"run python bench/readme.py --only {name}")
    rows = {r[0]: r for r in body}
    for run_row in run_body:
        assert run_row[0] in rows, f"{name}: the README's table has no {run_row[0]} row"
        for column in exact:
            readme_cell = rows[run_row[0]][header.index(column)]
            assert readme_cell == run_row[run_header.index(column)], f"{name}: {run_row[0]} / {column}"


# ---- hand-set policies: their models' size is fixed by the file, not by training ---------------


def _policy_blocks():
    """Sweeps over ``post_train.policy`` files: (block, benchmark, policy paths)."""
    found = []
    for block in _blocks():
        argv = shlex.split(block.command)
        if argv[:2] != ["automtl", "sweep"] or "--vary" not in argv:
            continue
        key, _, values = argv[argv.index("--vary") + 1].partition("=")
        if key == "post_train.policy":
            found.append((block, argv[argv.index("--benchmark") + 1], values.split(",")))
    return found


@pytest.mark.parametrize("name", [b.name for b, _, _ in _policy_blocks()])
def test_hand_set_policies_fit_their_benchmark_and_size_as_printed(name):
    from automtl.experiments.sweep import value_label
    from automtl.policy import Policy
    from automtl.search.build import build_experiment, build_supermodel
    from automtl.search.config import load_config
    from automtl.search.pipeline import model_macs
    from automtl.search.presets import preset

    block, benchmark, paths = next(p for p in _policy_blocks() if p[0].name == name)
    sm, _ = build_supermodel(build_experiment(load_config(preset(benchmark))).spec)
    header, body = readme.parse_table(block.text)
    rows = {r[0]: r for r in body}
    params, macs = header.index("# Params (M) mean ± std"), header.index("MACs (M) mean ± std")
    for path in paths:
        model = sm.derive(Policy.load(sm, os.path.join(ROOT, path)))  # the file names this backbone's nodes and tasks
        row = rows[value_label("automtl", "post_train.policy", path)]  # the row name the sweep gives it
        assert row[params] == f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f} ± 0.000", path
        assert row[macs] == f"{model_macs(model, sm) / 1e6:.3f} ± 0.000", path
