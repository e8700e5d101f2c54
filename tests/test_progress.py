"""progress.py: the one progress bar: drawn with its ETA when enabled, silent when not."""

from robustcnn.progress import progress_bar


def test_an_enabled_bar_shows_its_count_and_time_left(capsys):
    with progress_bar(enabled=True, desc="cells", total=4, unit="cell") as bar:
        for _ in range(4):
            bar.update()
    err = capsys.readouterr().err
    assert "cells" in err and "4/4" in err
    assert "<00:00" in err  # elapsed<remaining: the ETA


def test_a_disabled_bar_draws_nothing_and_keeps_its_methods(capsys):
    bar = progress_bar(range(3), enabled=False, desc="epoch 1/1", leave=False)
    assert list(bar) == [0, 1, 2]
    bar.set_postfix(loss="0.1")
    bar.set_postfix_str("x")
    bar.update()
    bar.close()
    assert capsys.readouterr().err == ""
