"""``cnnext convert``: ONNX file <-> cnnext model file, by the files' suffixes."""

from pathlib import Path


class UsageError(ValueError):
    """Arguments that make no conversion (the command line reports it as a usage error)."""


def convert(source, destination, input_shape=None, output=None, opset=None):
    """convert(source, destination, input_shape=None, output=None, opset=None)

    Convert ``source`` (.onnx or .npz) to ``destination`` (.npz or .onnx);
    return the lines to print.
    """
    from .. import load_model
    from ._onnx_export import to_onnx
    from ._onnx_import import from_onnx

    source, destination = Path(source), Path(destination)
    kinds = (source.suffix.lower(), destination.suffix.lower())
    if kinds == (".onnx", ".npz"):
        if output is not None or opset is not None:
            raise UsageError("--output and --opset apply to conversions to ONNX")
        model = from_onnx(source, input_shape=input_shape)
        model.save(destination)
        dropped = getattr(model, "onnx_output", None)
        note = (f" (its final {dropped} is what predict applies)" if dropped else "")
        return [f"{source} -> {destination}: {_describe(model)}{note}"]
    if kinds == (".npz", ".onnx"):
        model = load_model(source)
        to_onnx(model, destination, input_shape=input_shape, opset=opset, output=output)
        return [f"{source} -> {destination}: {_describe(model)}"]
    raise UsageError(f"cannot convert {source.name} to {destination.name}: give MODEL.onnx "
                     f"OUT.npz or MODEL.npz OUT.onnx")


def _describe(model):
    count = sum(int(p.size) for p in model.parameters().values())
    return (f"{len(model.layers)} layer(s), {count:,} parameters, {model.dtype}, input "
            f"{model.input_shape}")
