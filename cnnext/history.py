"""History: what ``Sequential.fit`` returns, one list of figures per metric.

A ``History`` is the dict ``fit`` always returned (``history["loss"]`` is the
list of the epochs' mean training losses), with every figure a Python
``float`` (``int`` for counts), plus ``epochs`` and ``plot()``.  matplotlib is
imported by ``plot`` only, so training never needs it.
"""

import numbers
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._typing import Path

if TYPE_CHECKING:
    import matplotlib.axes
    import matplotlib.figure

__all__ = ["History"]

# Metrics drawn on the loss axes; every other metric but the bookkeeping ones
# (seconds, skipped steps) is a rate in [0, 1] drawn on the accuracy axes.
_LOSS_KEYS = ("loss", "val_loss")
_NOT_PLOTTED = ("seconds", "skipped_steps", "lr")


class History(dict[str, list[Any]]):
    """History(keys=())

    The figures of a training run, one list per metric, one entry per epoch.

    A dict subclass: ``history["loss"]``, ``history.keys()``, ``dict(history)``
    and JSON serialisation work as for the plain dict ``fit`` returned before.
    Values appended through ``append`` are stored as Python ``float`` (or
    ``int`` for counts such as ``skipped_steps``), never NumPy scalars.

    Parameters
    ----------
    keys : iterable of str
        The metrics recorded, each starting as an empty list.

    Examples
    --------
    >>> from cnnext.history import History
    >>> h = History(["loss", "accuracy"])
    >>> h.append({"loss": 0.5, "accuracy": 0.75})
    >>> h.append({"loss": 0.25, "accuracy": 0.875})
    >>> h.epochs
    2
    >>> h["loss"]
    [0.5, 0.25]
    >>> h.last()
    {'loss': 0.25, 'accuracy': 0.875}
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        super().__init__((key, []) for key in keys)

    def __repr__(self) -> str:
        return f"History({dict.__repr__(self)})"

    @property
    def epochs(self) -> int:
        """The number of epochs recorded (the length of the longest list)."""
        return max((len(values) for values in self.values()), default=0)

    def append(self, logs: Mapping[str, Any]) -> None:  # type: ignore[override]
        """append(logs)

        Record one epoch: ``logs`` maps each metric to its figure.  Metrics
        not seen before get a new list.
        """
        for key, value in logs.items():
            self.setdefault(key, []).append(_python_number(value))

    def last(self) -> dict[str, Any]:
        """last()

        The figures of the last epoch recorded, as a dict (empty when no
        epoch was recorded).
        """
        return {key: values[-1] for key, values in self.items() if values}

    def plot(self, path: Path | None = None, *,
             ax: "matplotlib.axes.Axes | tuple[matplotlib.axes.Axes, matplotlib.axes.Axes] | None"
             = None, title: str | None = None) -> "matplotlib.figure.Figure":
        """plot(path=None, *, ax=None, title=None)

        Draw the training curves: losses on the left axes, accuracies on the
        right, against the epoch number (from 1).

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there (the format from the suffix, e.g. .png,
            .svg, .pdf).  Without ``ax``, the figure is then made outside
            pyplot: nothing is shown or left open.
        ax : matplotlib.axes.Axes or a pair of them, optional
            Draw into these axes (one: losses and accuracies on twin axes;
            two: losses on the first, accuracies on the second) instead of a
            new figure.
        title : str, optional

        Returns
        -------
        matplotlib.figure.Figure
            The figure drawn on.

        Raises
        ------
        ImportError
            matplotlib is not installed (``pip install matplotlib``).
        ValueError
            No epoch was recorded.
        """
        if self.epochs == 0:
            raise ValueError("History.plot: no epoch recorded, nothing to draw")
        try:
            import matplotlib.figure
        except ImportError as exc:
            raise ImportError(f"History.plot needs matplotlib (pip install matplotlib): "
                              f"{exc}") from None
        if ax is None:
            if path is None:  # a pyplot figure: shown by notebooks and plt.show()
                import matplotlib.pyplot as plt

                figure = plt.figure(figsize=(9, 3.5), layout="constrained")
            else:  # only saved: no pyplot, no backend, nothing left open
                figure = matplotlib.figure.Figure(figsize=(9, 3.5), layout="constrained")
            loss_ax, rate_ax = figure.subplots(1, 2)
        elif isinstance(ax, (tuple, list)):
            loss_ax, rate_ax = ax
            figure = loss_ax.figure
        else:
            loss_ax, rate_ax = ax, ax.twinx()
            figure = ax.figure
        for key, values in self.items():
            if key in _NOT_PLOTTED or not values:
                continue
            target = loss_ax if key in _LOSS_KEYS else rate_ax
            epochs = range(1, len(values) + 1)
            target.plot(epochs, values, marker="o", linestyle="--" if key.startswith("val_")
                        else "-", label=key.replace("_", " "))
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("loss")
        rate_ax.set_xlabel("epoch")
        rate_ax.set_ylabel("accuracy")
        for axes in (loss_ax, rate_ax):
            axes.xaxis.get_major_locator().set_params(integer=True)
            if axes.get_legend_handles_labels()[0]:
                axes.legend()
        if title is not None:
            figure.suptitle(title)
        if path is not None:
            figure.savefig(path)
        return figure


def _python_number(value: Any) -> Any:
    """``value`` as a Python int or float (NumPy scalars converted); others unchanged."""
    # fit logs plain floats and ints: skip the (slow) ABC checks for them.
    if type(value) is float or type(value) is int:
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def __dir__() -> list[str]:
    # Tab completion and dir() show the public names, not what the module imports.
    return [*__all__, "__doc__", "__name__"]
