"""Learning-rate schedules for ``Sequential.fit(..., lr_schedule=...)``.

A schedule is any callable ``schedule(epoch, base_lr) -> lr``: ``fit`` calls
it before every epoch (``epoch`` counts from 0 in that call) with the
optimiser's learning rate when ``fit`` began, and sets the optimiser's
``lr`` to the result for that epoch.  The classes here are the usual ones,
with the closed forms of their PyTorch namesakes (``torch.optim.lr_scheduler``
stepped once per epoch)::

    model.fit(X, y, epochs=30, optimizer=optim.SGD(lr=0.1, momentum=0.9),
              lr_schedule=schedules.CosineDecay(30))
"""

import math

import numpy as np

__all__ = ["CosineDecay", "ExponentialDecay", "StepDecay"]


def _count(owner, name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: {name} must be >= 1, got {value}")
    return int(value)


def _rate(owner, name, value, low=0.0, high=math.inf):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{owner}: {name} must be a finite number in [{low}, {high}], got "
                         f"{value!r}")
    return value


class _Schedule:
    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    __hash__ = None


class StepDecay(_Schedule):
    """StepDecay(step_size, gamma=0.1)

    ``base_lr * gamma ** (epoch // step_size)``: the rate is multiplied by
    ``gamma`` every ``step_size`` epochs (PyTorch's ``StepLR``).

    Parameters
    ----------
    step_size : int >= 1
    gamma : float in [0, 1]
    """

    def __init__(self, step_size, gamma=0.1):
        self.step_size = _count("StepDecay", "step_size", step_size)
        self.gamma = _rate("StepDecay", "gamma", gamma, 0.0, 1.0)

    def __call__(self, epoch, base_lr):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(_Schedule):
    """ExponentialDecay(gamma)

    ``base_lr * gamma ** epoch`` (PyTorch's ``ExponentialLR``).

    Parameters
    ----------
    gamma : float in [0, 1]
    """

    def __init__(self, gamma):
        self.gamma = _rate("ExponentialDecay", "gamma", gamma, 0.0, 1.0)

    def __call__(self, epoch, base_lr):
        return base_lr * self.gamma ** epoch


class CosineDecay(_Schedule):
    """CosineDecay(epochs, min_lr=0.0)

    Half a cosine from ``base_lr`` at epoch 0 down to ``min_lr`` at epoch
    ``epochs``, then ``min_lr``::

        min_lr + (base_lr - min_lr) * (1 + cos(pi * min(epoch, epochs) / epochs)) / 2

    (PyTorch's ``CosineAnnealingLR`` with ``T_max=epochs``, ``eta_min=min_lr``,
    without its restarts past ``T_max``).

    Parameters
    ----------
    epochs : int >= 1
    min_lr : float >= 0
    """

    def __init__(self, epochs, min_lr=0.0):
        self.epochs = _count("CosineDecay", "epochs", epochs)
        self.min_lr = _rate("CosineDecay", "min_lr", min_lr)

    def __call__(self, epoch, base_lr):
        progress = min(epoch, self.epochs) / self.epochs
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2
