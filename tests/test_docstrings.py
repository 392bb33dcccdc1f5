"""The `Examples` sections (>>>) of the public docstrings run as doctests, and stay right."""

import doctest
import importlib
import inspect

import numpy as np
import pytest

# Every public module; their __all__ names (and those names' methods) are searched.
MODULES = ["cnnext", "cnnext.functional", "cnnext.layers", "cnnext.optim", "cnnext.losses",
           "cnnext.models", "cnnext.datasets", "cnnext.history", "cnnext.compat"]
# Names whose docstrings must show an example (more may have one).
MUST_SHOW = [
    "cnnext.Sequential", "cnnext.load_model", "cnnext.show_config",
    "cnnext.functional.conv2d", "cnnext.functional.conv2d_backward",
    "cnnext.functional.max_pool2d", "cnnext.functional.avg_pool2d", "cnnext.functional.relu",
    "cnnext.functional.linear", "cnnext.functional.softmax_cross_entropy",
    "cnnext.layers.Conv2D", "cnnext.layers.Dense", "cnnext.layers.MaxPool2D",
    "cnnext.optim.SGD", "cnnext.optim.Adam", "cnnext.models.seed_cnn", "cnnext.models.lenet5",
    "cnnext.datasets.load_sample", "cnnext.datasets.load_mnist", "cnnext.history.History",
]


def public_objects():
    """(qualified name, object) of every public name of every public module, once each."""
    seen, found = set(), []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.ismodule(value) or not (inspect.isclass(value) or callable(value)):
                continue
            if id(value) not in seen:
                seen.add(id(value))
                found.append((f"{module_name}.{name}", value))
    return found


def doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for qualified, value in public_objects():
        tests.extend(test for test in finder.find(value, name=qualified, globs={"np": np})
                     if test.examples)
    return tests


DOCTESTS = doctests()


@pytest.mark.parametrize("test", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_docstring_examples(test, tmp_path, monkeypatch, num_threads):
    monkeypatch.chdir(tmp_path)  # examples that save files write them here
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with np.printoptions(legacy=False):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} failed"


def test_the_main_public_names_show_an_example():
    shown = {test.name for test in DOCTESTS}
    assert [name for name in MUST_SHOW if name not in shown] == []
