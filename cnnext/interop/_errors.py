"""The errors of cnnext.interop and the optional imports it needs."""

import importlib


class ConversionError(ValueError):
    """A model that cannot be converted: an operator, attribute or layer with no
    exact counterpart, or a file that is not a well-formed model.  The message
    names the operator and node (or layer) and what is supported."""


def require(module, extra):
    """Import ``module`` (onnx, torch) or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"cnnext.interop needs {module} for this ({exc}); install it with "
                          f"pip install {extra}") from None
