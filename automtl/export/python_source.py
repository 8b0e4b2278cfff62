"""Source-to-source export: a derived model as a standalone, readable Python module.

``export_python(model, directory)`` writes

* ``model.py``: a module that imports only torch. ``MultiTaskModel.__init__`` builds every
  operator the model runs, one line each, ending with the tasks that run it: ``torch.nn``
  modules by their constructor calls; automtl's skip modules, and modules torch.fx cannot go
  inside (kept whole), by classes written out in the file from their source. ``forward`` is
  the derived model's fx code, flattened so that task heads and other user modules appear as
  the torch operations they perform. ``load()`` builds the model and reads its weights.
* ``weights.pt``: the state_dict, loaded with ``torch.load(..., weights_only=True)``.

Nothing is pickled as code: the weights file holds tensors only, and the structure is source.
"""

from __future__ import annotations

import builtins
import dis
import importlib.util
import inspect
import io
import keyword
import math
import os
import re
import sys
import tempfile
import textwrap
import types
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from automtl.errors import ExportError
from automtl.export.checks import check_example_input, check_model, compare_outputs, eval_mode, first_line, task_outputs
from automtl.export.cost import task_reach
from automtl.export.flatten import flatten_model, is_torch_operator
from automtl.io import atomic_write_bytes, atomic_write_text

PathLike = Union[str, os.PathLike]
WEIGHTS_FILE = "weights.pt"
#: Largest relative error the written module may have against the model when checked.
TOLERANCE = 1e-5

# The names the generated module binds at its top; generated code may use these and nothing else.
_IMPORTS = {"torch": torch, "F": F, "nn": nn}
# fx spells a few constants as bare names; the generated module defines them.
_FX_CONSTANTS = {
    "inf": 'inf = float("inf")',
    "nan": 'nan = float("nan")',
    "device": "device = torch.device",
    "NoneType": "NoneType = type(None)",
}


def export_python(
    model: nn.Module,
    directory: PathLike,
    example_input: Optional[torch.Tensor] = None,
    *,
    module_name: str = "model",
) -> str:
    """Write ``model`` as ``<directory>/<module_name>.py`` plus ``<directory>/weights.pt``.

    The module imports only torch; ``import model; net = model.load()`` rebuilds the model with
    its weights (in eval mode) and ``net(x)`` returns ``{task: tensor}``. With ``example_input``
    the module is first written to a scratch folder, imported, and must compute what ``model``
    computes (relative error 1e-5) before anything is written to ``directory``. Returns the
    path of the ``.py`` file.
    """
    model = check_model(model, "export_python")
    if not isinstance(module_name, str) or not module_name.isidentifier() or keyword.iskeyword(module_name):
        raise ExportError(f"module_name must be a Python identifier such as 'model', got {module_name!r}")
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ExportError(f"{directory} exists and is not a directory; export_python writes a folder")
    flat = flatten_model(model, "export_python")
    source = _Writer(model, flat, module_name).module_source()
    try:
        compile(source, f"{module_name}.py", "exec")
    except SyntaxError as exc:  # a bug here, not the user's: say so
        raise ExportError(f"internal: the generated source does not compile ({exc}); please report this model") from exc
    state = {k: v.detach().cpu().clone() for k, v in flat.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)

    if example_input is not None:  # check a copy in a scratch folder before writing the real one
        x = check_example_input(example_input, "export_python")
        with tempfile.TemporaryDirectory(prefix="automtl-export-") as scratch:
            scratch_source = os.path.join(scratch, f"{module_name}.py")
            atomic_write_bytes(os.path.join(scratch, WEIGHTS_FILE), buffer.getvalue())
            atomic_write_text(scratch_source, source)
            _check_written(model, scratch_source, x)
    source_path = os.path.join(directory, f"{module_name}.py")
    atomic_write_bytes(os.path.join(directory, WEIGHTS_FILE), buffer.getvalue())
    atomic_write_text(source_path, source)
    return source_path


def _check_written(model: nn.Module, source_path: str, x: torch.Tensor) -> None:
    """Import the written module under a fresh name and compare its outputs with the model's."""
    name = f"_automtl_export_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, source_path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        written = module.load()
        with torch.no_grad():
            got = written(x.cpu())
    except Exception as exc:
        raise ExportError(
            f"internal: the written module {source_path} fails to run: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    finally:
        sys.modules.pop(name, None)
    with eval_mode(model):
        expected = task_outputs(model, x, "export_python")
    compare_outputs(expected, got, TOLERANCE, f"the Python module {source_path}")


# -- values and constructor calls ----------------------------------------------------------
def value_source(value: Any, where: str) -> str:
    """Python source for a constructor argument: numbers, strings, None, tuples and lists."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(value_source(v, where) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(value_source(v, where) for v in value) + "]"
    if isinstance(value, torch.dtype):
        return str(value)  # "torch.float32"
    raise ExportError(f"{where}: cannot write a {type(value).__name__} ({value!r}) as Python source")


def _public_state(module: nn.Module) -> Dict[str, Any]:
    """What defines a module besides its tensors: plain attributes, its repr, tensor shapes."""
    plain = {
        k: v
        for k, v in vars(module).items()
        if not k.startswith("_") and k != "training" and not isinstance(v, (torch.Tensor, nn.Module))
    }
    tensors = {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}
    return {"repr": repr(module), "plain": repr(plain), "tensors": tensors}


def torch_constructor(module: nn.Module, where: str) -> Tuple[List[Any], Dict[str, Any]]:
    """Arguments that rebuild a ``torch.nn`` module: every constructor parameter is read from
    the attribute of the same name (``bias``-style flags from whether the tensor exists).
    The rebuilt module is compared with the original; any difference is an error. The short
    form (``stride=2`` for ``(2, 2)``, defaults left out) is used when it rebuilds the same."""
    for compact in (True, False):
        args, kwargs = _constructor_arguments(module, where, compact)
        rebuilt = _build(type(module), args, kwargs, where)
        if _public_state(rebuilt) == _public_state(module):
            return args, kwargs
    raise ExportError(
        f"{where}: {type(module).__name__} rebuilt from its attributes differs from the original "
        f"({repr(rebuilt)} vs {repr(module)}); it cannot be written as source"
    )


def _constructor_arguments(module: nn.Module, where: str, compact: bool) -> Tuple[List[Any], Dict[str, Any]]:
    cls = type(module)
    signature = inspect.signature(cls.__init__)
    args: List[Any] = []
    kwargs: Dict[str, Any] = {}
    for name, param in list(signature.parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in ("device", "dtype"):
            continue
        has_default = param.default is not inspect.Parameter.empty
        if not hasattr(module, name):
            if has_default:
                continue
            raise ExportError(
                f"{where}: cannot write {cls.__name__} as source: its constructor argument '{name}' is not "
                "stored on the module"
            )
        value = getattr(module, name)
        if isinstance(value, torch.Tensor) or (value is None and isinstance(param.default, bool)):
            value = value is not None  # e.g. bias=True/False
        if compact and isinstance(value, tuple) and value and all(_same(v, value[0]) for v in value):
            value = value[0]  # (3, 3) -> 3
        if has_default and _same(value, param.default):
            continue
        if has_default or kwargs:
            kwargs[name] = value
        else:
            args.append(value)
    return args, kwargs


def _build(cls: type, args: List[Any], kwargs: Dict[str, Any], where: str) -> nn.Module:
    try:
        if "device" in inspect.signature(cls.__init__).parameters:  # skip the weight initialisation
            return torch.nn.utils.skip_init(cls, *args, **kwargs)
        return cls(*args, **kwargs)
    except Exception as exc:
        raise ExportError(f"{where}: cannot rebuild {cls.__name__} from its attributes: {first_line(exc)}") from exc


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def _call_source(prefix: str, args: Sequence[Any], kwargs: Mapping[str, Any], where: str) -> str:
    parts = [value_source(a, where) for a in args]
    parts += [f"{k}={v if isinstance(v, _Source) else value_source(v, where)}" for k, v in kwargs.items()]
    return f"{prefix}({', '.join(parts)})"


class _Source(str):
    """Already-written source (a nested constructor call), passed through as it is."""


# -- the writer ----------------------------------------------------------------------------
class _Writer:
    def __init__(self, model: nn.Module, flat: torch.fx.GraphModule, module_name: str = "model"):
        self.model = model
        self.module_name = module_name
        self.flat = flat
        self.classes: Dict[type, str] = {}  # classes written out from their source
        self.helpers: Dict[str, Tuple[Any, str]] = {}  # module-level functions they call: (function, source)
        self.aliases: Dict[str, Tuple[Any, str]] = {}  # torch modules they name otherwise: (module, line)
        self.reach = task_reach(flat.graph)
        self.task_names = list(next(n for n in flat.graph.nodes if n.op == "output").args[0].keys())

    # modules ------------------------------------------------------------------------------
    def module_source(self) -> str:
        init_lines = self._init_lines()
        forward = self._forward_source()
        constants = [line for name, line in _FX_CONSTANTS.items() if re.search(rf"\b{name}\b", forward)]
        parts = [self._docstring(), _HEADER.strip("\n")]
        if constants:
            parts.append("\n".join(constants))
        parts.append(_PUT_HELPERS.strip("\n"))
        if self.classes:
            parts.append(
                "# -- modules written out from their source: automtl's skips (a task that skips an\n"
                "# operator runs one of these) and modules run as a whole --"
            )
            if self.aliases:
                parts.append("\n".join(line for _, line in self.aliases.values()))
            parts.extend(source for _, source in self.helpers.values())
            parts.extend(self.classes.values())
        parts.append(self._class_source(init_lines, forward))
        parts.append(_LOAD.strip("\n"))
        return "\n\n\n".join(p.rstrip("\n") for p in parts) + "\n"

    def _tasks_of(self, node: torch.fx.Node) -> str:
        tasks = self.reach.get(node, ())
        return ", ".join(tasks) if tasks else "no task"

    def _init_lines(self) -> List[str]:
        lines: List[str] = []
        called: Dict[str, torch.fx.Node] = {}
        for node in self.flat.graph.nodes:
            if node.op == "call_module" and node.target not in called:
                called[node.target] = node
        users: Dict[str, List[str]] = {}
        for node in self.flat.graph.nodes:
            if node.op in ("call_module", "get_attr"):
                for task in self.reach.get(node, ()):
                    if task not in users.setdefault(node.target, []):
                        users[node.target].append(task)
        for path, node in called.items():
            module = self.flat.get_submodule(path)
            expr = self.module_expression(module, path)
            lines.append(f"_put(self, {path!r}, {expr})  # {', '.join(users.get(path, [])) or 'no task'}")
        done: Set[str] = set()
        for node in self.flat.graph.nodes:
            if node.op != "get_attr" or node.target in done:
                continue
            done.add(node.target)
            if any(node.target == p or node.target.startswith(p + ".") for p in called):
                continue  # a tensor of a module built above
            value = _fetch(self.flat, node.target)
            tasks = ", ".join(users.get(node.target, [])) or "no task"
            if isinstance(value, nn.Parameter):
                lines.append(
                    f"_put_parameter(self, {node.target!r}, {tuple(value.shape)!r}, {value.dtype}, "
                    f"requires_grad={value.requires_grad})  # {tasks}"
                )
            elif isinstance(value, torch.Tensor):
                lines.append(f"_put_buffer(self, {node.target!r}, {tuple(value.shape)!r}, {value.dtype})  # {tasks}")
            else:
                lines.append(f"_put_constant(self, {node.target!r}, {value_source(value, node.target)})  # {tasks}")
        dtype = _single_float_dtype(self.flat)
        if dtype is not None and dtype != torch.float32:
            lines.append(f"self.to({dtype})")
        return lines

    def module_expression(self, module: nn.Module, where: str) -> str:
        """Source that builds ``module``: a torch.nn constructor call, a container of such, or
        a call of a class written out from its source (skips, and modules torch.fx could not
        go inside)."""
        cls = type(module)
        if is_torch_operator(module):
            args, kwargs = torch_constructor(module, where)
            name = f"nn.{cls.__name__}" if getattr(nn, cls.__name__, None) is cls else f"{cls.__module__}.{cls.__qualname__}"
            return _call_source(name, args, kwargs, where)
        if isinstance(module, (nn.ModuleList, nn.Sequential, nn.ModuleDict)) and _plain_container(module):
            return self._container_expression(module, where)
        return self._written_expression(module, where)

    def _container_expression(self, module: nn.Module, where: str) -> str:
        items = [(name, self.module_expression(child, f"{where}.{name}")) for name, child in module.named_children()]
        if isinstance(module, nn.ModuleDict):
            return "nn.ModuleDict({" + ", ".join(f"{name!r}: {expr}" for name, expr in items) + "})"
        if [name for name, _ in items] != [str(i) for i in range(len(items))]:
            raise ExportError(f"{where}: a {type(module).__name__} with named children cannot be written as source")
        kind = "nn.ModuleList([" if isinstance(module, nn.ModuleList) else "nn.Sequential("
        close = "])" if isinstance(module, nn.ModuleList) else ")"
        return kind + ", ".join(expr for _, expr in items) + close

    def _written_expression(self, module: nn.Module, where: str) -> str:
        cls = type(module)
        if cls.__bases__ != (nn.Module,):
            raise ExportError(
                f"export_python: module '{where}' ({cls.__name__}) is run as a whole (torch.fx cannot go "
                f"inside it), and its class derives from {cls.__bases__[0].__name__}, not nn.Module: only "
                "direct nn.Module subclasses can be written out from their source"
            )
        fields = _fields(module)
        self._write_class(cls, fields, where)
        kwargs: Dict[str, Any] = {}
        for name, value in fields.items():
            if isinstance(value, nn.Module):
                kwargs[name] = _Source(self.module_expression(value, f"{where}.{name}"))
            elif isinstance(value, nn.Parameter):
                kwargs[name] = _Source(
                    f"nn.Parameter(torch.empty({tuple(value.shape)!r}, dtype={value.dtype}), requires_grad={value.requires_grad})"
                )
            elif isinstance(value, torch.Tensor):
                kwargs[name] = _Source(f"torch.empty({tuple(value.shape)!r}, dtype={value.dtype})")
            else:
                kwargs[name] = value
        return _call_source(cls.__name__, [], kwargs, where)

    def _write_class(self, cls: type, fields: Mapping[str, Any], where: str) -> None:
        """The class's source: an ``__init__`` that stores ``fields`` (buffers registered as
        such), then its own methods as written, and the module-level functions they call."""
        if cls in self.classes:
            return
        clash = next((c for c in self.classes if c.__name__ == cls.__name__), None)
        if clash is not None or cls.__name__ == "MultiTaskModel":
            raise ExportError(
                f"export_python: two different classes are named {cls.__name__} ({cls.__module__} and "
                f"{getattr(clash, '__module__', 'the generated model')}); rename one"
            )
        buffers = {name for name, value in fields.items() if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter)}
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0]
        lines = [f"class {cls.__name__}(nn.Module):"]
        if doc:
            lines += [textwrap.indent(f'"""{doc}"""', "    "), ""]
        init_at = len(lines)
        lines.append(f"    def __init__(self, {', '.join(fields)}):" if fields else "    def __init__(self):")
        lines.append("        super().__init__()")
        for name in fields:
            if name in buffers:
                lines.append(f"        self.register_buffer({name!r}, {name})")
            else:
                lines.append(f"        self.{name} = {name}")
        for name, member in vars(cls).items():
            function = _function_of(member)
            if name == "__init__" or (name.startswith("__") and name.endswith("__") and function is None):
                continue  # __init__ is the one written above; __module__, __doc__, ...
            if function is None:  # a class-level constant, written before __init__
                lines.insert(init_at, f"    {name} = {value_source(member, f'{cls.__name__}.{name}')}")
                init_at += 1
                continue
            try:
                source = inspect.getsource(function)  # decorators included
            except (OSError, TypeError) as exc:
                raise ExportError(f"export_python: the source of {cls.__name__}.{name} (module '{where}') is not available") from exc
            lines.append("")
            lines.append(textwrap.indent(textwrap.dedent(source), "    ").rstrip("\n"))
            self._collect_globals(function, cls, where)
        self.classes[cls] = "\n".join(lines)

    def _collect_globals(self, function: types.FunctionType, owner: type, where: str) -> None:
        """What ``function`` reads from its module's globals must exist in the written module:
        torch and its submodules (under the same names), builtins, and module-level functions
        of the class's own module (written out too)."""
        for name in _global_names(function.__code__):
            if name in function.__globals__:
                value = function.__globals__[name]
            elif hasattr(builtins, name):
                continue
            else:
                raise ExportError(f"export_python: {owner.__name__} (module '{where}') reads '{name}', which is not defined")
            if name in _IMPORTS and value is _IMPORTS[name]:
                continue
            if isinstance(value, types.ModuleType) and value.__name__.split(".")[0] == "torch":
                self._alias(name, f"{name} = {value.__name__}", value, owner)
                continue
            if isinstance(value, types.FunctionType) and value.__module__ == owner.__module__:
                if name not in self.helpers:
                    try:
                        self.helpers[name] = (value, textwrap.dedent(inspect.getsource(value)).rstrip("\n"))
                    except (OSError, TypeError) as exc:
                        raise ExportError(f"export_python: the source of {name} (used by {owner.__name__}) is not available") from exc
                    self._collect_globals(value, owner, where)
                elif self.helpers[name][0] is not value:
                    raise ExportError(f"export_python: two different functions named {name} are needed; rename one")
                continue
            raise ExportError(
                f"export_python: {owner.__name__} (module '{where}', run as a whole because torch.fx cannot go "
                f"inside it) reads the global '{name}' ({type(value).__name__} from {getattr(value, '__module__', '?')}), "
                "which a module that imports only torch cannot provide; make it an attribute or a torch call"
            )

    def _alias(self, name: str, line: str, value: Any, owner: type) -> None:
        if name in self.aliases and self.aliases[name][0] is not value:
            raise ExportError(f"export_python: '{name}' names two different modules in the code to write ({owner.__name__})")
        self.aliases[name] = (value, line)

    # forward ------------------------------------------------------------------------------
    def _forward_source(self) -> str:
        code = self.flat.graph.python_code(root_module="self")
        src = code.src
        start = src.find("def forward(")
        src = src[start:]
        allowed = set(_IMPORTS) | set(_FX_CONSTANTS) | set(dir(builtins))
        for name, value in code.globals.items():
            if name in allowed or not re.search(rf"\b{re.escape(name)}\b", src):
                continue
            raise ExportError(
                f"export_python: {self._user_of(value)} calls {getattr(value, '__module__', '?')}."
                f"{getattr(value, '__name__', name)}, which is not part of torch; a torch-only module cannot "
                "call it. Replace it with torch operations (or export to ONNX/TorchScript instead)."
            )
        return _shorten_functional(src).rstrip()

    def _user_of(self, value: Any) -> str:
        for node in self.flat.graph.nodes:
            if node.op == "call_function" and node.target is value:
                return f"node '{node.name}' (run by {self._tasks_of(node)})"
        return "the model"

    def _docstring(self) -> str:
        from automtl import __version__

        tasks = ", ".join(self.task_names)
        policy = getattr(self.model, "policy", None)
        policy_line = ""
        if policy is not None and hasattr(policy, "nodes"):
            policy_line = (
                f"\nPolicy: {len(policy.nodes)} searchable operators x {len(policy.tasks)} tasks - "
                f"{policy.count('shared')} shared, {policy.count('own')} own, {policy.count('skip')} skipped.\n"
            )
        return f'''"""A multi-task model for tasks {tasks}, written by automtl {__version__}.

Standalone: this module imports only torch.

    import {{module}}                  # this file, on sys.path
    net = {{module}}.load()            # weights from {WEIGHTS_FILE} next to this file; eval mode
    out = net(images)             # {{{", ".join(f'"{t}": tensor' for t in self.task_names)}}}
{policy_line}
Each line of MultiTaskModel.__init__ builds one operator and ends with the tasks that run it.
An operator several tasks run on the same input is computed once and read by all of them:
that is how the tasks share work.
"""'''.replace("{module}", self.module_name)

    def _class_source(self, init_lines: List[str], forward: str) -> str:
        body = "\n".join(f"        {line}" for line in init_lines) or "        pass"
        tasks = ", ".join(repr(t) for t in self.task_names)
        return (
            "class MultiTaskModel(nn.Module):\n"
            f"    TASKS = ({tasks}{',' if len(self.task_names) == 1 else ''})\n\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            f"{body}\n\n"
            f"{textwrap.indent(forward, '    ')}"
        )


def _shorten_functional(src: str) -> str:
    """``torch.nn.functional.relu(`` and ``torch._C._nn.gelu(`` (how fx spells some of
    them) -> ``F.relu(`` / ``F.gelu(``, where ``F`` has that very function."""

    def short(match: "re.Match[str]") -> str:
        prefix, name = match.group(1), match.group(2)
        owner = F if prefix == "torch.nn.functional." else torch._C._nn
        same = getattr(F, name, None) is getattr(owner, name, object())
        return f"F.{name}(" if same else match.group(0)

    return re.sub(r"\b(torch\.nn\.functional\.|torch\._C\._nn\.)(\w+)\(", short, src)


_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def _function_of(member: Any) -> Optional[types.FunctionType]:
    """The function behind a class member (method, static/class method, property)."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    elif isinstance(member, property):
        member = member.fget
    return member if isinstance(member, types.FunctionType) else None


def _fields(module: nn.Module) -> Dict[str, Any]:
    """What a module written out from its source is built from: its own attributes (not
    nn.Module's bookkeeping), submodules, parameters and persistent buffers, in that order."""
    found: Dict[str, Any] = {}
    for name, value in vars(module).items():
        # dunder names are torch's own marks (torch.jit.script leaves ``__overloads__``)
        if name not in _MODULE_INTERNALS and not (name.startswith("__") and name.endswith("__")):
            found[name] = value
    found.update(module._modules)
    found.update(module._parameters)
    for name, value in module._buffers.items():
        if name in module._non_persistent_buffers_set:
            raise ExportError(f"export_python: {type(module).__name__} has a non-persistent buffer '{name}', which is not saved")
        found[name] = value
    return found


def _plain_container(module: nn.Module) -> bool:
    """A ModuleList/Sequential/ModuleDict (or a subclass that only adds an ``__init__``)."""
    for base in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
        if isinstance(module, base):
            own = {k for k, v in vars(type(module)).items() if isinstance(v, types.FunctionType)} if type(module) is not base else set()
            return own <= {"__init__"} and not any(k not in _MODULE_INTERNALS for k in vars(module))
    return False


def _global_names(code: types.CodeType) -> List[str]:
    """Names a function reads from its module's globals (not attribute names)."""
    names = [i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return list(dict.fromkeys(names))


def _fetch(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _single_float_dtype(module: nn.Module) -> Optional[torch.dtype]:
    dtypes = {t.dtype for t in module.state_dict().values() if t.is_floating_point()}
    if len(dtypes) > 1:
        raise ExportError(f"export_python: the model mixes floating-point types {sorted(map(str, dtypes))}; use one")
    return next(iter(dtypes), None)


_HEADER = '''
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_FILE = "weights.pt"
'''

_PUT_HELPERS = '''
def _parent(root, path):
    """The module that holds ``path`` (dotted), creating empty containers on the way."""
    *parents, name = path.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    return root, name


def _put(root, path, module):
    parent, name = _parent(root, path)
    parent.add_module(name, module)


def _put_parameter(root, path, shape, dtype, requires_grad=True):
    parent, name = _parent(root, path)
    parent.register_parameter(name, nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=requires_grad))


def _put_buffer(root, path, shape, dtype):
    parent, name = _parent(root, path)
    parent.register_buffer(name, torch.empty(shape, dtype=dtype))


def _put_constant(root, path, value):
    parent, name = _parent(root, path)
    setattr(parent, name, value)
'''

_LOAD = '''
def load(weights=None, map_location="cpu"):
    """The model with its weights (read with weights_only=True: tensors only), in eval mode.
    ``weights`` defaults to the file written next to this module."""
    if weights is None:
        folder = __file__[: max(__file__.rfind("/"), __file__.rfind("\\\\")) + 1]
        weights = folder + WEIGHTS_FILE
    with torch.device("meta"):  # build without initialising weights: they come from the file
        model = MultiTaskModel()
    model.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True), assign=True)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_meta:
            raise RuntimeError(f"{weights} has no value for {name}")
    return model.eval()
'''
