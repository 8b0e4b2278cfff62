"""See what a search found: the policy heat map, the sharing diagram of the derived model,
training curves, and one self-contained ``report.html`` per run.

    automtl.viz.show("runs/scenes")      # or: automtl show runs/scenes

Figures are drawn with matplotlib on the non-interactive Agg canvas (no window, no change to
pyplot's backend). :class:`PlotCallback` and :func:`tensorboard_callback` write plots and
TensorBoard scalars while a search runs (``automtl search --plots``).
"""

from automtl.viz.curves import stages_in, training_curves
from automtl.viz.diagram import SharingLayout, sharing_diagram, sharing_layout
from automtl.viz.heatmap import PolicyDistribution, policy_heatmap
from automtl.viz.live import PlotCallback, TensorBoardCallback, tensorboard_callback
from automtl.viz.report import render_report, table_html
from automtl.viz.show import RunContents, ShowResult, read_run, show, write_figures

__all__ = [
    "show",
    "read_run",
    "write_figures",
    "render_report",
    "table_html",
    "RunContents",
    "ShowResult",
    "PolicyDistribution",
    "policy_heatmap",
    "SharingLayout",
    "sharing_layout",
    "sharing_diagram",
    "training_curves",
    "stages_in",
    "PlotCallback",
    "TensorBoardCallback",
    "tensorboard_callback",
]
