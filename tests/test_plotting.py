"""robustcnn.plotting: the one place figures are made and written."""

import sys

import pytest

from robustcnn import plotting


def test_without_matplotlib_the_error_is_one_line_naming_the_caller(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(plotting.PlotUnavailable,
                       match=r"^plot_x needs matplotlib: pip install 'robustcnn\[plot\]'$"):
        plotting.figure("plot_x")
    assert issubclass(plotting.PlotUnavailable, ValueError)  # the command line's one-line path


def test_a_panel_is_finished_and_written_as_png(tmp_path):
    pytest.importorskip("matplotlib")
    fig = plotting.figure("test", (3, 2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [20, 80], label="line")
    plotting.finish_percent_axes(ax, "x", "y (%)", "title", legend_size=7, grid="both")
    assert ax.get_ylim() == (0, 100)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("x", "y (%)", "title")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["line"]
    path = tmp_path / "f.png"
    assert plotting.save_png(fig, path) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary file left
