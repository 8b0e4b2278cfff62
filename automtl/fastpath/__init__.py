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
* :mod:`.cpu_memory`: keep freed CPU memory, so large stacked tensors cost no page faults.
"""

from .cpu_memory import keep_freed_memory
from .executor import EXECUTIONS, ExecutionReport, NodePlan, forget_plan, path_for, plan, report, run_fast
from .plain import register_per_sample_module

__all__ = ["EXECUTIONS", "ExecutionReport", "NodePlan", "forget_plan", "keep_freed_memory", "path_for", "plan", "register_per_sample_module", "report", "run_fast"]
