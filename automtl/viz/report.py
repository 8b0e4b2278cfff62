"""``report.html``: one self-contained page per run - figures embedded as base64 PNG, CSS
inline, no script, no external address - so it opens from disk with no server, and can be
mailed or archived as one file."""

from __future__ import annotations

import base64
import html
import json
import math
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from automtl.compiler.ir import OPTIONS

if TYPE_CHECKING:  # pragma: no cover
    from automtl.export.derive import MultiTaskModel
    from automtl.search.report import Table
    from automtl.viz.show import Figures, RunContents

STAGE_TITLES = {"pretrain": "Stage 1: pre-train", "policy_train": "Stage 2: policy-train", "post_train": "Stage 3: post-train"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 1.5rem 2rem 3rem; color: #1f2933; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #d5dbe1; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.85rem; }
pre { background: #f5f7fa; border: 1px solid #e1e6eb; padding: 0.8rem; overflow-x: auto; }
.meta { color: #52606d; margin-top: 0; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.8rem; }
th, td { border: 1px solid #d5dbe1; padding: 0.2rem 0.4rem; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.2rem; }
th { background: #eef2f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.searched td { background: #eef5ff; font-weight: 600; }
.pos { color: #1d7a38; } .neg { color: #b42318; }
.figure { margin: 0.8rem 0; overflow-x: auto; }
.figure img { max-width: 100%; height: auto; border: 1px solid #e1e6eb; box-sizing: border-box; }
.wide { overflow-x: auto; }
.figure img.tall { max-width: 860px; }
.note { background: #fff8e6; border-left: 4px solid #f0b429; padding: 0.4rem 0.8rem; margin: 0.4rem 0; }
.swatch { display: inline-block; width: 0.8rem; height: 0.8rem; vertical-align: -0.1rem; margin-right: 0.25rem; }
footer { margin-top: 3rem; color: #7b8794; font-size: 0.8rem; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def image_tag(path: str, alt: str, tall: bool = False) -> str:
    """An ``<img>`` holding the PNG at ``path`` as a data URI."""
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    cls = ' class="tall"' if tall else ""
    return f'<div class="figure"><img{cls} alt="{_e(alt)}" src="data:image/png;base64,{data}"></div>'


def table_html(table: "Table", highlight: Sequence[str] = ("AutoMTL",)) -> str:
    """The results table (see :class:`automtl.search.report.Table`) as HTML."""
    groups, header, body = table.cells()
    out = ['<div class="wide"><table>']
    if table.title:
        out.append(f"<caption>{_e(table.title)}</caption>")
    out.append("<thead><tr>" + "".join(f'<th colspan="{span}">{_e(label)}</th>' for label, span in groups) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for cells in body:
        cls = ' class="searched"' if cells[0] in highlight else ""
        row = []
        for column, cell in zip(header, cells):
            if column == header[0]:
                row.append(f"<td>{_e(cell)}</td>")
                continue
            sign = ""
            if column.startswith("Δt") and cell not in ("-", "+0.0", "-0.0"):
                sign = " pos" if cell.startswith("+") else " neg"
            row.append(f'<td class="num{sign}">{_e(cell)}</td>')
        out.append(f"<tr{cls}>" + "".join(row) + "</tr>")
    out.append("</tbody></table></div>")
    if table.notes:
        out += [f'<p class="meta">{_e(n)}</p>' for n in table.notes]
    return "\n".join(out)


def _count(n: Optional[int]) -> str:
    return "-" if n is None else f"{n:,}"


def parameter_breakdown(model: "MultiTaskModel") -> Dict[str, Any]:
    """Parameters of a derived model by kind (``shared``, ``own``, ``skip``, ``heads``) and,
    per task, those it runs and those only it has."""
    kinds = {"shared": 0, "own": 0, "skip": 0, "heads": 0}
    only: Dict[str, int] = {t: 0 for t in model.task_names}
    for name, p in model.named_parameters():
        parts = name.split(".")
        kind = parts[0] if parts[0] in kinds else "shared"
        kinds[kind] += p.numel()
        if kind in ("own", "skip", "heads") and len(parts) > 1 and parts[1] in only:
            only[parts[1]] += p.numel()
    per_task = {t: {"runs": model.num_parameters(t), "only": only[t]} for t in model.task_names}
    return {"total": model.num_parameters(), "kinds": kinds, "per_task": per_task}


def _parameters_section(contents: "RunContents", figures: "Figures") -> str:
    results = contents.results or {}
    rows: List[Tuple[str, str]] = []
    out = ['<h2 id="parameters">Parameters</h2>']
    model = figures.model
    if model is not None:
        found = parameter_breakdown(model)
        kinds = found["kinds"]
        rows = [
            ("total (each operator counted once)", _count(found["total"])),
            ("shared operators", _count(kinds["shared"])),
            ("tasks' own copies", _count(kinds["own"])),
            ("skip projections", _count(kinds["skip"])),
            ("task heads", _count(kinds["heads"])),
        ]
        out.append("<table><tbody>" + "".join(f'<tr><th>{_e(k)}</th><td class="num">{v}</td></tr>' for k, v in rows) + "</tbody></table>")
        out.append("<table><thead><tr><th>task</th><th>parameters it runs</th><th>of which only its own</th></tr></thead><tbody>")
        for task, values in found["per_task"].items():
            out.append(f'<tr><td>{_e(task)}</td><td class="num">{_count(values["runs"])}</td><td class="num">{_count(values["only"])}</td></tr>')
        out.append("</tbody></table>")
    elif results:
        out.append(f'<p>total: {_count(results.get("parameters"))}</p>')
        per_task = results.get("parameters_per_task") or {}
        if per_task:
            out.append("<table><thead><tr><th>task</th><th>parameters it runs</th></tr></thead><tbody>")
            out += [f'<tr><td>{_e(t)}</td><td class="num">{_count(n)}</td></tr>' for t, n in per_task.items()]
            out.append("</tbody></table>")
    else:
        out.append('<p class="note">no final model yet</p>')
    if results.get("macs") is not None:
        size = results.get("input_size")
        where = f" for one {'x'.join(str(d) for d in size)} input" if size else ""
        out.append(f"<p>compute{_e(where)}: {_count(results['macs'])} MACs (multiply-accumulates of the final model, "
                   "work shared by several tasks counted once)</p>")
    if contents.policy is not None:
        policy = contents.policy
        counts = ", ".join(f"{policy.count(o)} {o}" for o in OPTIONS)
        once = figures.layout.computed_once() if figures.layout is not None and figures.layout.calls is not None else None
        line = f"policy: {len(policy.nodes)} searchable operators × {len(policy.tasks)} tasks: {counts}"
        if once is not None:
            line += f"; {once} shared call{'s' if once != 1 else ''} computed once for two or more tasks"
        out.append(f"<p>{_e(line)}</p>")
    return "\n".join(out)


def _summary(contents: "RunContents") -> str:
    info, results = contents.info, contents.results or {}
    parts = [f"method <b>{_e(contents.method)}</b>"]
    if contents.tasks:
        parts.append(f"{len(contents.tasks)} tasks: {_e(', '.join(contents.tasks))}")
    spec = info.get("spec") or {}
    if spec.get("backbone") is not None:
        from automtl.backbones import describe_backbone

        try:
            parts.append(f"backbone {_e(describe_backbone(spec['backbone']))}")
        except Exception:  # a description is a courtesy; an unknown spec form must not stop the report
            parts.append(f"backbone {_e(json.dumps(spec['backbone']))}")
    if info.get("device"):
        parts.append(f"device {_e(info['device'])} × {_e(info.get('world_size', 1))}")
    if info.get("stages"):
        parts.append(f"stages {_e(', '.join(info['stages']))}")
    seconds = results.get("seconds")
    if isinstance(seconds, (int, float)) and math.isfinite(seconds):
        parts.append(f"{seconds:.1f} s")
    return '<p class="meta">' + " · ".join(parts) + "</p>"


def _legend() -> str:
    from automtl.viz._figure import OPTION_COLOURS

    return " ".join(f'<span class="swatch" style="background:{c}"></span>{_e(o)}' for o, c in OPTION_COLOURS.items())


def render_report(
    contents: "RunContents",
    figures: "Figures",
    baselines: Optional[Mapping[str, "RunContents"]] = None,
    baseline_figures: Optional[Mapping[str, "Figures"]] = None,
) -> str:
    """The HTML page of a run (see :func:`automtl.viz.show.show`)."""
    baselines = baselines or {}
    baseline_figures = baseline_figures or {}
    sections = [("results", "Results"), ("parameters", "Parameters"), ("policy", "Policy"), ("model", "Derived model"),
                ("curves", "Training curves"), ("config", "Config")]
    body = [f"<h1>automtl run <code>{_e(contents.name)}</code></h1>", _summary(contents)]
    body.append("<nav>" + "".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in sections) + "</nav>")
    body += [f'<p class="note">{_e(n)}</p>' for n in contents.notes]

    body.append('<h2 id="results">Results</h2>')
    if contents.table is not None:
        body.append(table_html(contents.table))
        body.append('<p class="meta">Δt: mean relative performance against the single-task model, in % (higher is better); '
                    "↑ / ↓: higher / lower is better.</p>")
    else:
        body.append('<p class="note">no results yet</p>')

    body.append(_parameters_section(contents, figures))

    body.append('<h2 id="policy">Policy</h2>')
    if figures.heatmap:
        body.append(f"<p>The probability of each option per task and searchable node, in network order ({_legend()}); "
                    "the outlined cell is the option the final model uses.</p>")
        body.append(image_tag(figures.heatmap[0], "heat map of the learned policy distribution"))
    else:
        body.append('<p class="note">no learned policy distribution to show</p>')

    body.append('<h2 id="model">Derived model</h2>')
    if figures.diagram:
        body.append("<p>What each task runs at every searchable node. A line joins the tasks that use the same shared "
                    "weights; merged cells are one call of the shared operator on the same input, computed once for "
                    "those tasks (a letter marks one call drawn in pieces).</p>")
        body.append(image_tag(figures.diagram[0], "sharing diagram of the derived model", tall=True))
    else:
        body.append('<p class="note">no policy yet</p>')

    body.append('<h2 id="curves">Training curves</h2>')
    if not figures.curves:
        body.append('<p class="note">nothing logged yet</p>')
    for stage, path in figures.curves.items():
        body.append(f"<h3>{_e(STAGE_TITLES.get(stage, stage))}</h3>")
        body.append(image_tag(path, f"training curves of {stage}"))
    for name, other in baseline_figures.items():
        if other.curves:
            body.append(f"<details><summary>Baseline <code>{_e(name)}</code> ({_e(baselines[name].method if name in baselines else name)})</summary>")
            for stage, path in other.curves.items():
                body.append(image_tag(path, f"training curves of baseline {name}, {stage}"))
            body.append("</details>")

    body.append('<h2 id="config">Config</h2>')
    body.append("<p>The resolved config (<code>config.yaml</code>): every default filled in.</p>")
    body.append(f"<pre>{_e(contents.config_text or '(no config.yaml)')}</pre>")
    if contents.info:
        body.append("<details><summary><code>run.json</code></summary>")
        body.append(f"<pre>{_e(json.dumps(contents.info, indent=1))}</pre></details>")

    from automtl import __version__

    body.append(f"<footer>written by automtl {__version__} <code>automtl show</code>, {_e(time.strftime('%Y-%m-%d %H:%M'))}; "
                f"files in <code>{_e(contents.run.path)}</code></footer>")
    title = f"automtl run {contents.name}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
