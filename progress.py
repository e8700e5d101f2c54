"""Progress bars: one tqdm bar for training epochs, a study's cells and a cell's examples.

tqdm shows the count, the elapsed time, the rate and, when the total is known, the time left
(ETA). A bar that is not ``enabled`` draws nothing but keeps every method (``update``,
``set_postfix``, ``close``, iteration, ``with``), so callers never branch on whether progress
is shown. tqdm is imported on the first bar: importing robustcnn stays light.
"""


def progress_bar(iterable=None, *, enabled=True, desc=None, total=None, unit="it", leave=True,
                 position=None, bar_format=None):
    """A tqdm bar over ``iterable`` (or counting to ``total``; None: a count without an ETA).

    ``leave``: keep the finished bar on screen; ``position``: its line when bars nest (0 the
    outer one, 1 the bar of the step inside it); ``bar_format``: tqdm's, for a bar whose count
    is not of items (the study's estimated seconds). In a notebook the bar is a widget
    (``tqdm.auto``)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, position=position,
                disable=not enabled, bar_format=bar_format)
