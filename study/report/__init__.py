"""A study database → ``cells.csv``, ``report.md`` and four figures (PNG).

``tables`` shapes the rows (attack cells with their model's sanity checks, per-model means and
spreads over seeds, the size-matched headline pairs, the Pareto front); ``design`` names each
model's method and arm and groups the models by file size; ``markdown`` writes the
report, one function per section; ``figures`` draws ``FIGURES`` with matplotlib (the ``plot``
extra, imported only when drawing: without it the CSV and Markdown are written and the report
says how to get the figures); ``files`` writes them all from a database (``write_report``).
"""

from .figures import FIGURES, write_figures
from .files import CSV_COLUMNS, PLOT_NOTE, csv_text, write_report
from .markdown import headline_section, markdown
from .tables import (MATCHED, compare, fixed_eps, headline_pairs, non_monotone, pareto_front,
                     pareto_points, prepare, summarise)

__all__ = ["CSV_COLUMNS", "FIGURES", "MATCHED", "PLOT_NOTE", "compare", "csv_text", "fixed_eps",
           "headline_pairs", "headline_section", "markdown", "non_monotone", "pareto_front",
           "pareto_points", "prepare", "summarise", "write_figures", "write_report"]
