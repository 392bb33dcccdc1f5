"""ONNX's own node test cases run through cnnext.interop.from_onnx (the conformance figures).

``collect_testcases()`` (onnx.backend.test.case.node) builds every operator's
test models with inputs and expected outputs from ONNX's reference
implementation.  A case's extra graph inputs (a Conv's weight) become
initializers holding the test data, since a cnnext model holds its weights;
then the model goes through a file and ``from_onnx``.  Each case ends as
"pass" (outputs equal to ONNX's within the case's tolerances, ONNX's own
test of a backend), "refused" (a
ConversionError naming what is not supported) or "wrong" (anything else).
Run as a script it prints one line per case and the totals.
"""

import tempfile
import warnings
from pathlib import Path

import numpy as np

OPERATORS = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool")


def node_cases(operators=OPERATORS):
    """ONNX's single-node test cases of ``operators``, by name."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return {case.name: case for case in cases if case.model is not None
            and len(case.model.graph.node) == 1
            and case.model.graph.node[0].op_type in operators}


def spatial_rank(case):
    return len(case.model.graph.input[0].type.tensor_type.shape.dim) - 2


def with_weights(case):
    """The case's model with every graph input but the first as an initializer."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, _ = case.data_sets[0]
    graph = model.graph
    extra = list(graph.input[1:])
    for value, data in zip(extra, inputs[1:], strict=True):
        graph.initializer.append(numpy_helper.from_array(np.asarray(data), value.name))
        graph.input.remove(value)
    return model


def run_case(case, folder):
    """("pass" | "refused" | "wrong", detail) for one node test case."""
    import onnx

    from cnnext.interop import ConversionError, from_onnx

    path = Path(folder) / f"{case.name}.onnx"
    onnx.save(with_weights(case), path)
    inputs, outputs = case.data_sets[0]
    try:
        model = from_onnx(path)
    except ConversionError as exc:
        return "refused", str(exc).split(": ", 1)[-1]
    x = np.asarray(inputs[0])
    if x.ndim == 3:  # a 1-D model takes (N, C, 1, L)
        x = x[:, :, None, :]
    try:
        y = model.forward(x.astype(model.dtype))
    except Exception as exc:  # a model that converted but cannot run is wrong
        return "wrong", f"{type(exc).__name__}: {exc}"
    want = np.asarray(outputs[0])
    if y.size != want.size:
        return "wrong", f"output shape {y.shape}, expected {want.shape}"
    y = y.reshape(want.shape)
    error = float(np.max(np.abs(y.astype(np.float64) - want), initial=0.0))
    # ONNX's own comparison of a backend's outputs, with the case's tolerances
    # (some expected outputs are written out to 4 digits).
    if np.allclose(y, want, rtol=case.rtol, atol=case.atol):
        return "pass", f"max |error| {error:.2g}"
    return "wrong", f"max |error| {error:.3g} (rtol {case.rtol:g}, atol {case.atol:g})"


def run_all(operators=OPERATORS):
    """{name: (spatial rank, outcome, detail)} for every case of ``operators``."""
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, case in node_cases(operators).items():
            results[name] = (spatial_rank(case), *run_case(case, folder))
    return results


def main():
    results = run_all()
    for name, (rank, outcome, detail) in sorted(results.items()):
        print(f"{outcome:8} {rank}-D {name}: {detail}")
    for rank in sorted({r for r, _, _ in results.values()}):
        counts = {o: sum(1 for r, out, _ in results.values() if r == rank and out == o)
                  for o in ("pass", "refused", "wrong")}
        print(f"{rank}-D: {sum(counts.values())} cases, {counts['pass']} pass, "
              f"{counts['refused']} refused, {counts['wrong']} wrong")


if __name__ == "__main__":
    main()
