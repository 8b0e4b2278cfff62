"""The SuperModel's fast path: every task's work in one tensor.

It computes what the reference path :meth:`SuperModel.run_backbone` computes, with the task axis
inside the tensor so that the number of operator calls per node does not grow with the number
of tasks. ``SuperModel.forward`` uses it on accelerators by default (``sm.set_execution("auto")``;
on the CPU ``auto`` keeps the per-task path, see :func:`path_for`) and everywhere with
``sm.set_execution("fast")``.

* :mod:`.values`: how values are held (``[B*G, ...]``, sample-major);
* :mod:`.operators`: convolution, linear, batch and group norm, and the skips, task-batched;
* :mod:`.plain`: which parameter-free operators run once on the stacked tensor;
* :mod:`.executor`: the walk over the graph, the mixing and the per-node fallback;
* :mod:`.cpu_memory`: large stacked tensors on the CPU: keep freed memory, or run such nodes per task.
"""

from .cpu_memory import DEFAULT_CPU_STACK_LIMIT, cpu_stack_limit, keep_freed_memory, set_cpu_stack_limit
from .executor import EXECUTIONS, ExecutionReport, NodePlan, forget_plan, path_for, plan, report, run_fast
from .plain import register_per_sample_module

__all__ = [
    "DEFAULT_CPU_STACK_LIMIT", "EXECUTIONS", "ExecutionReport", "NodePlan", "cpu_stack_limit", "forget_plan", "keep_freed_memory",
    "path_for", "plan", "register_per_sample_module", "report", "run_fast", "set_cpu_stack_limit",
]
