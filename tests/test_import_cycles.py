"""No import cycles in the package: the graph of module-level imports of every module under
``automtl/`` and ``compiler/`` (``automtl.compiler``), read with ``ast``, is acyclic.

An import inside a function runs when the function does, and one under ``if TYPE_CHECKING:``
never runs, so neither is an edge. ``from package import name`` is an edge to
``package.name`` where that is a module, else to ``package``. The implicit import of a
module's parent packages is not an edge: the package ``__init__`` files re-export the API
(``automtl/__init__.py`` imports nearly everything), so with them every module would sit on a
cycle through the root; what this test guards is that the modules themselves point down
the layers."""

import ast
import os

import networkx as nx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"automtl": os.path.join(ROOT, "automtl"), "automtl.compiler": os.path.join(ROOT, "compiler")}


def _modules():
    """Module name -> (path, whether it is a package ``__init__``)."""
    found = {}
    for prefix, folder in PACKAGES.items():
        for here, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            rel = os.path.relpath(here, folder)
            parts = [] if rel == "." else rel.split(os.sep)
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                stem = name[:-3]
                dotted = ".".join([prefix, *parts] + ([] if stem == "__init__" else [stem]))
                if dotted == "automtl.compiler" and prefix == "automtl":
                    continue
                found[dotted] = (os.path.join(here, name), stem == "__init__")
    return found


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body):
    """Import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _module_level_imports(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _module_level_imports(node.body)


def import_graph():
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, (path, is_package) in modules.items():
        tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
        package = name if is_package else name.rpartition(".")[0]
        for node in _module_level_imports(tree.body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                # `import automtl.x.y` and `compiler` imported by its installed name
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    graph.add_edge(name, target)
    return graph


def test_the_graph_is_read():
    graph = import_graph()
    assert graph.has_edge("automtl.search.pipeline", "automtl.methods.base")
    assert graph.has_edge("automtl.methods.adashare", "automtl.methods.base")
    assert "automtl.compiler.ir" in graph


def test_no_import_cycles():
    graph = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    if cycles:
        shown = []
        for component in cycles:
            cycle = nx.find_cycle(graph.subgraph(component))
            shown.append(" -> ".join([a for a, _ in cycle] + [cycle[0][0]]))
        raise AssertionError("import cycles (module-level imports):\n" + "\n".join(shown))
