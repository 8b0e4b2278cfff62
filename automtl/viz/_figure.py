"""Figures drawn with matplotlib's object API on the non-interactive Agg canvas - never
``pyplot``, so nothing here changes the user's global backend or opens a window - and
written atomically."""

from __future__ import annotations

import io
import os
from typing import Dict, Optional, Sequence, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from automtl.compiler.ir import OPTIONS
from automtl.io import atomic_write_bytes

#: One colour per policy option (shared, own, skip): blue / orange / grey read apart for
#: colour-blind eyes too, and skip is drawn hatched as well.
OPTION_COLOURS: Dict[str, str] = {"shared": "#2f6db5", "own": "#e07b24", "skip": "#b9c0c9"}
#: A sequential colour map per option for the probability heat map.
OPTION_CMAPS: Dict[str, str] = {"shared": "Blues", "own": "Oranges", "skip": "Greys"}
assert tuple(OPTION_COLOURS) == OPTIONS

PNG_DPI = 110


def new_figure(width: float, height: float, layout: Optional[str] = "constrained") -> Figure:
    """A figure on an Agg canvas; ``layout=None`` for grids of many panels, where the
    constrained layout costs seconds per save (margins are then set by the caller)."""
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def figure_bytes(figure: Figure, fmt: str, dpi: int = PNG_DPI) -> bytes:
    buffer = io.BytesIO()
    # fixed metadata: the same figure gives the same bytes (no creation date, no version)
    metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    figure.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def save_figure(figure: Figure, path_stem: str, formats: Sequence[str] = ("png",), dpi: int = PNG_DPI) -> Tuple[str, ...]:
    """Write ``figure`` as ``<path_stem>.<fmt>`` for every format; returns the paths."""
    written = []
    for fmt in formats:
        path = f"{os.fspath(path_stem)}.{fmt}"
        atomic_write_bytes(path, figure_bytes(figure, fmt, dpi))
        written.append(path)
    return tuple(written)


def label_size(count: int) -> float:
    """Font size of tick labels for ``count`` rows: smaller for long networks, never tiny."""
    return 8.0 if count <= 24 else 7.0 if count <= 48 else 6.0


def text_width(chars: int, size: float) -> float:
    """Inches taken by ``chars`` characters of DejaVu Sans at ``size`` points (about 0.6 em each)."""
    return 0.6 * size / 72.0 * chars
