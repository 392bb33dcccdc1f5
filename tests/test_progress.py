"""The dependency-free progress bar: silent in logs until close, in place on a terminal."""

import io

from cnnext._progress import ProgressBar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_prints_one_summary_line_at_close():
    out = io.StringIO()
    with ProgressBar(100, desc="epoch 1", unit="img", file=out) as bar:
        for _ in range(100):
            bar.update(1, loss=0.25)
        assert out.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("epoch 1 [########################] 100/100")
    assert "loss=0.25" in lines[0] and "img/s" in lines[0]


def test_terminal_redraws_in_place_and_ends_with_newline():
    out = FakeTerminal()
    bar = ProgressBar(4, desc="dl", unit="B", file=out)
    bar.update(2048)
    bar.close()
    bar.close()  # idempotent
    text = out.getvalue()
    assert text.startswith("\r\x1b[2K") and text.endswith("\n")
    assert text.count("\n") == 1
    assert "2.0 KiB" in text


def test_unknown_total_shows_count_only():
    bar = ProgressBar(None, desc="download", unit="B", file=io.StringIO())
    bar.update(3 << 20)
    assert bar.line().startswith("download 3.0 MiB")
