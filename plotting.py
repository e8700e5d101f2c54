"""The one home of robustcnn's figures: a matplotlib Figure on an Agg canvas of its own (no
pyplot, so no global backend or figure registry is touched in a user's process), the finishing
of an accuracy panel, and the atomic PNG write. matplotlib is the ``plot`` extra, imported only
here and only when a figure is drawn."""

from .atomic import atomic_path


class PlotUnavailable(ValueError):
    """matplotlib is not installed: one line saying what needs it and how to get it."""


def figure(what, figsize=None):
    """A new Figure (``figsize`` inches; None: matplotlib's default) with its own Agg canvas.
    ``what`` names the caller in the PlotUnavailable raised when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(f"{what} needs matplotlib: pip install 'robustcnn[plot]'") \
            from None
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def finish_percent_axes(ax, xlabel, ylabel, title=None, *, legend_size=None, grid="major"):
    """Labels, a 0-100 % y axis, a light grid (``grid``: which ticks), the legend and the title
    of one panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, which=grid)
    ax.legend(fontsize=legend_size)
    if title:
        ax.set_title(title)


def save_png(fig, path, dpi=100):
    """Lay ``fig`` out and write it to ``path`` as a PNG, atomically → ``path``."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
