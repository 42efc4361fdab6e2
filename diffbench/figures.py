"""matplotlib as diffbench uses it: off-screen, labels as plain text, figures written atomically.

Below every package that draws (report, analysis), so none of them imports another for its plumbing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot() -> Any:
    """matplotlib's pyplot, off-screen, reading every label as plain text: model names and titles are
    user text, and a name such as ``m$x^$`` must print as typed, not fail as mathtext."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, out_stem: Path) -> list[Path]:
    """STEM.png and STEM.svg, each written atomically (never through a link planted in the run)."""
    import matplotlib.pyplot as plt

    from diffbench.store import atomic_write_bytes

    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for path in paths:
        buffer = io.BytesIO()
        if path.suffix == ".png":
            fig.savefig(buffer, format="png", dpi=120)
        else:  # no date: the same figure gives the same bytes
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)
    return paths


def inline_svg(build: Callable[[], Figure], salt: str, prefix: str = "") -> str:
    """A figure as an inline ``<svg>`` element, for HTML pages that hold several.

    Every element id (and every reference to one) gets ``prefix``, so several figures can share
    one HTML page without clashing ids; matplotlib numbers its groups figure_1, axes_1, ... in
    every figure. ``salt`` makes the remaining generated ids stable across runs.
    """
    import matplotlib
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig = build()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
        plt.close(fig)
    text = buffer.getvalue()
    svg = re.sub(r"<metadata>.*?</metadata>", "", text[text.find("<svg") :], flags=re.DOTALL).strip()
    if prefix:
        tag = re.sub(r"[^\w-]+", "-", prefix).strip("-") + "-"
        svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{tag}{m.group(1)}"', svg)
        svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{tag}{m.group(1)})", svg)
        svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{tag}{m.group(1)}"', svg)
    return svg
