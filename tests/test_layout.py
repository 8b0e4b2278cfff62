"""The repository keeps the layout and set-up promises of DESIGN.md and README.md."""

import importlib.metadata
import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_top_level_layout():
    for entry in ("automtl", "compiler", "proto", "examples", "tests", "bench", "setup.py", "README.md", ".ci/run"):
        assert os.path.exists(os.path.join(ROOT, entry)), entry


def test_compiler_installs_only_inside_automtl():
    assert importlib.metadata.distribution("automtl").read_text("top_level.txt").split() == ["automtl"]
    spec = importlib.util.find_spec("automtl.compiler")
    assert spec is not None and os.path.samefile(os.path.dirname(spec.origin), os.path.join(ROOT, "compiler"))


def test_readme_opens_with_main_job_and_test_commands():
    main_job, tests = _readme_commands()[:2]
    assert main_job.startswith("pip install -c constraints.txt")
    assert tests.startswith("pip install -c constraints.txt") and '".[test]"' in tests and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command():
    tests = _readme_commands()[1]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert tests in ci.splitlines()


def test_constraints_pin_torch_and_torchvision():
    pins = open(os.path.join(ROOT, "constraints.txt"), encoding="utf-8").read().split()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    setup = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert '"torch>=2.1"' in setup  # users get a range, CI and the README the pins
