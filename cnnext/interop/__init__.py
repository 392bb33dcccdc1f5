"""ONNX and PyTorch models in and out of cnnext.

``from_onnx(path)`` and ``to_onnx(model, path)`` read and write ONNX files
(``pip install "cnnext[onnx]"`` for the ``onnx`` package; running a model
needs only NumPy); ``from_torch(module, input_shape)`` and ``to_torch(model)``
convert ``torch.nn`` modules directly (torch imported only when they are
called).  Weights are copied bitwise; an operator, attribute or module with
no exact cnnext counterpart is refused with a ``ConversionError`` naming it,
never approximated.

Modules, each calling only the ones below it:

===============  ==============================================================
_onnx_import     ONNX graph -> layers, one converter per operator
_onnx_export     layers -> ONNX graph
_convert         ``cnnext convert``: .onnx <-> .npz
_torch           torch.nn modules <-> layers (torch.fx traces for residual nets);
                 _torch_modules: the torch modules it builds where torch has none
_graph           chains and skip connections of a dataflow graph -> layers
_onnx_file       reading untrusted ONNX files with bounded memory
_errors          ConversionError, optional imports
===============  ==============================================================
"""

from ._errors import ConversionError
from ._onnx_export import to_onnx
from ._onnx_import import from_onnx
from ._torch import from_torch, to_torch

__all__ = ["ConversionError", "from_onnx", "from_torch", "to_onnx", "to_torch"]
