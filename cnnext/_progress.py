"""A dependency-free progress bar for training epochs and downloads.

On a terminal it redraws one line in place (at most ~10 times a second, so a
per-image training loop does not pay for printing).  Elsewhere (a log, CI, a
notebook's captured stream) it stays silent until ``close``, which prints one
summary line: one line per epoch in a log.
"""

import sys
import time


def _format_count(value, unit):
    if unit == "B":
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= scale:
                return f"{value / scale:.1f} {suffix}"
        return f"{value} B"
    return f"{value}"


class ProgressBar:
    """ProgressBar(total, desc="", unit="it", file=None, enabled=None)

    Parameters
    ----------
    total : int or None
        Number of units expected (None when unknown, e.g. a download without
        Content-Length).
    desc : str
        Label printed before the bar.
    unit : str
        "it" for counts, "img" for images, "B" for bytes (printed as KiB/MiB).
    file : text stream, optional
        Where to write; sys.stderr by default.
    enabled : bool, optional
        Draw in place; default: only when ``file`` is a terminal.
    """

    width = 24
    refresh_seconds = 0.1

    def __init__(self, total, desc="", unit="it", file=None, enabled=None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = sys.stderr if file is None else file
        if enabled is None:
            isatty = getattr(self.file, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.count = 0
        self.postfix = ""
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1, **postfix):
        """Advance by ``n`` units; keyword arguments are shown after the bar."""
        self.count += n
        if postfix:
            self.set_postfix(**postfix)
        if self.enabled:
            now = time.perf_counter()
            if now - self._last_draw >= self.refresh_seconds or self.count == self.total:
                self._last_draw = now
                self._draw(end="")

    def set_postfix(self, **postfix):
        """Replace the ``key=value`` text shown after the bar."""
        self.postfix = "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items()
        )

    def line(self):
        """The current status as one line of text."""
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        done = _format_count(self.count, self.unit)
        if self.total:
            fraction = min(self.count / self.total, 1.0)
            filled = round(fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            head = f"{self.desc} [{bar}] {done}/{_format_count(self.total, self.unit)}"
        else:
            head = f"{self.desc} {done}"
        rate_text = _format_count(int(rate), self.unit) if self.unit == "B" else f"{rate:.0f}"
        text = f"{head}  {elapsed:.1f}s  {rate_text} {self.unit}/s"
        return f"{text}  {self.postfix}" if self.postfix else text

    def _draw(self, end):
        self.file.write("\r\x1b[2K" + self.line() + end)
        self.file.flush()

    def close(self):
        """Finish the bar: a final redraw on a terminal, a summary line elsewhere."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(end="\n")
        else:
            self.file.write(self.line() + "\n")
            self.file.flush()
