"""The front of a sweep (:func:`automtl.experiments.sweep.sweep`): Δt against parameters and against
MACs, the swept runs joined in the order of their values, the reference methods as points of
their own, error bars one standard deviation over the seeds."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from matplotlib.figure import Figure

from automtl.viz._figure import new_figure

#: Reference methods: a marker and colour each (the swept runs are a blue line of dots).
_MARKERS: Dict[str, Tuple[str, str]] = {
    "Single-Task": ("s", "#222222"), "Multi-Task": ("D", "#e07b24"), "AdaShare": ("^", "#3a9a4a"), "Max-Roaming": ("v", "#9b4fb0"),
}


def front_figure(points: Sequence[Mapping[str, Any]], key: str, title: str = "") -> Figure:
    """Two panels (parameters, MACs; the MACs panel only when the points carry MACs)."""
    axes_of = [("parameters", "parameters (M)")]
    if any(p.get("macs") is not None for p in points):
        axes_of.append(("macs", "MACs (M)"))
    figure = new_figure(5.2 * len(axes_of), 4.2)
    swept = [p for p in points if "value" in p and p.get("delta") is not None]
    others = [p for p in points if "value" not in p and p.get("delta") is not None]
    for i, (field, label) in enumerate(axes_of):
        ax = figure.add_subplot(1, len(axes_of), i + 1)
        line = [p for p in swept if p.get(field) is not None]
        if line:
            xs = [p[field] / 1e6 for p in line]
            ax.errorbar(xs, [p["delta"] for p in line], xerr=[p.get(f"{field}_std", 0) / 1e6 for p in line],
                        yerr=[p.get("delta_std", 0) for p in line], fmt="-o", color="#2f6db5", capsize=3,
                        label=_swept_name(line[0]["name"]))
            for p, x in zip(line, xs):
                ax.annotate(f"{p['value']}", (x, p["delta"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for p in others:
            if p.get(field) is None:
                continue
            ax.errorbar([p[field] / 1e6], [p["delta"]], xerr=[p.get(f"{field}_std", 0) / 1e6], yerr=[p.get("delta_std", 0)],
                        fmt=_MARKERS.get(p["name"], ("o", "#777777"))[0], color=_MARKERS.get(p["name"], ("o", "#777777"))[1],
                        capsize=3, label=p["name"])
        ax.axhline(0.0, color="#999999", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("Δt (%) vs single-task")
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="best")
    figure.suptitle(title or f"front over {key}", fontsize=9)
    return figure


def _swept_name(row: str) -> Optional[str]:
    return row.split(" ")[0] + " (" + row.split(" ", 1)[1].split("=")[0] + ")" if " " in row else row
