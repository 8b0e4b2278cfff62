"""No code path evaluates text or unpickles objects from a user's file: a scan of automtl's own
source (the package, the compiler, the fuzz harness, benchmarks and examples) for the calls
that would - ``eval``/``exec``, ``pickle``/``marshal``/``shelve`` loading, ``torch.load``
without ``weights_only=True``, ``yaml.load`` without a safe loader, ``numpy.load`` with
pickles, TorchScript loading, importing a module named by data, shell commands.

The scan reads the syntax tree, so comments, strings and method names that merely contain
these words (``model.eval()``) do not count; it is checked against a sample of each pattern."""

import ast
import os
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("automtl", "compiler", "proto", "fuzz", "bench", "examples")

_BUILTINS = {"eval", "exec", "__import__"}
_MODULE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("_pickle", "load"), ("_pickle", "loads"),
    ("cPickle", "load"), ("cPickle", "loads"), ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"),
    ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("runpy", "run_path"), ("runpy", "run_module"),
    ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "unsafe_load_all"), ("os", "system"), ("os", "popen"),
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<source>") -> List[str]:
    """``file:line: call`` of every call in ``source`` that could run code from data."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        parts = name.split(".")
        bad = None
        if isinstance(node.func, ast.Name) and name in _BUILTINS:
            bad = name
        elif len(parts) >= 2 and (parts[-2], parts[-1]) in _MODULE_CALLS:
            bad = name
        elif name in ("torch.load",) and not _is_true(_keyword(node, "weights_only")):
            bad = "torch.load without weights_only=True"
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _dotted(_keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else ast.Constant(None)))
            if not loader.endswith(("SafeLoader", "CSafeLoader")):
                bad = f"{name} without a SafeLoader"
        elif name in ("np.load", "numpy.load") and _is_true(_keyword(node, "allow_pickle")):
            bad = f"{name} with allow_pickle=True"
        elif name in ("torch.jit.load", "jit.load"):
            bad = name
        elif name in ("importlib.import_module", "import_module") and not (node.args and isinstance(node.args[0], ast.Constant)):
            bad = f"{name} of a name that is not a constant"
        elif name.startswith("subprocess.") and _is_true(_keyword(node, "shell")):
            bad = f"{name} with shell=True"
        if bad:
            found.append(f"{filename}:{node.lineno}: {bad}")
    return found


def _python_files():
    for top in SCANNED:
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


#: the one place that imports a module by name: a config names user code the way a script
#: does (``module:`` backbones, ``data.dataset``); what a loaded file names is refused there
#: (tests/export/test_meta_loading.py::test_a_loaded_file_does_not_run_the_code_it_names)
SANCTIONED = {os.path.join("automtl", "importing.py"): ["importlib.import_module of a name that is not a constant"]}


def test_no_source_file_runs_code_from_data():
    files = list(_python_files())
    assert len(files) > 50  # the scan does see the code base
    found = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            relative = os.path.relpath(path, ROOT)
            calls = unsafe_calls(f.read(), relative)
        allowed = SANCTIONED.get(relative, [])
        found += [c for c in calls if c.split(": ", 1)[1] not in allowed]
    assert found == []


def test_the_scan_finds_each_pattern():
    sample = "\n".join(
        [
            "eval(text)",
            "exec(text)",
            "__import__(name)",
            "pickle.load(f)",
            "pickle.loads(data)",
            "marshal.loads(data)",
            "torch.load(path)",
            "torch.load(path, weights_only=False)",
            "yaml.load(f)",
            "yaml.load(f, Loader=yaml.Loader)",
            "yaml.unsafe_load(f)",
            "np.load(path, allow_pickle=True)",
            "torch.jit.load(path)",
            "importlib.import_module(spec['module'])",
            "subprocess.run(cmd, shell=True)",
            "os.system(cmd)",
        ]
    )
    assert [line.split(": ", 1)[1] for line in unsafe_calls(sample)] == [
        "eval", "exec", "__import__", "pickle.load", "pickle.loads", "marshal.loads",
        "torch.load without weights_only=True", "torch.load without weights_only=True",
        "yaml.load without a SafeLoader", "yaml.load without a SafeLoader", "yaml.unsafe_load",
        "np.load with allow_pickle=True", "torch.jit.load", "importlib.import_module of a name that is not a constant",
        "subprocess.run with shell=True", "os.system",
    ]


def test_the_scan_lets_safe_calls_through():
    sample = "\n".join(
        [
            "model.eval()",
            "torch.load(path, map_location='cpu', weights_only=True)",
            "yaml.safe_load(f)",
            "yaml.load(f, Loader=yaml.SafeLoader)",
            "np.load(path, allow_pickle=False)",
            "importlib.import_module('torchvision')",
            "subprocess.run([sys.executable, script])",
            "'eval(text) in a string'",
            "json.load(f)",
        ]
    )
    assert unsafe_calls(sample) == []
