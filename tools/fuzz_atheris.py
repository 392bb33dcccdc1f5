"""Coverage-guided fuzzing of cnnext's file parsers with atheris (libFuzzer), for long runs.

Usage (from outside the checkout, with cnnext and atheris installed)::

    pip install atheris
    python tools/fuzz_atheris.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of

* ``idx``: ``parse_idx(data)`` on the raw bytes (gzip-compressed or not);
* ``checkpoint``: ``load_model`` on the raw bytes of a file;
* ``checkpoint-header``: the bytes are the JSON header of a checkpoint,
  zipped with the valid parameter arrays behind correct CRCs, so every
  input reaches the checks past the zip layer.

Each target seeds libFuzzer with valid files.  The documented exceptions
(``DataFileError`` for IDX; ``CheckpointError`` for checkpoints) are the
expected outcome of bad input; any other exception is a finding, and
libFuzzer stops and saves the input as ``crash-<sha1>``.  Examples::

    python tools/fuzz_atheris.py idx -runs=1000000
    python tools/fuzz_atheris.py checkpoint-header -max_total_time=600 corpus/

Add ``-print_final_stats=1`` for libFuzzer's count of inputs run; when a
finding stops the run, the script also prints what the inputs before it raised.
"""

import atexit
import collections
import gzip
import io
import os
import sys
import tempfile
import zipfile

import atheris

with atheris.instrument_imports(include=["cnnext"]):
    import numpy as np

    import cnnext
    from cnnext.datasets import DataFileError
    from cnnext.datasets._idx import parse_idx
    from cnnext.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

IDX_LIMIT = 1 << 20
META = "cnnext_checkpoint.npy"

outcomes = collections.Counter()


def idx_seeds():
    arrays = [(np.arange(24, dtype=">u1").reshape(2, 3, 4), 0x08),
              (np.linspace(-1, 1, 6, dtype=">f4").reshape(3, 2), 0x0D),
              (np.arange(5, dtype=">i4"), 0x0C)]
    seeds = []
    for array, type_byte in arrays:
        raw = bytes([0, 0, type_byte, array.ndim]) + b"".join(
            int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
        seeds += [raw, gzip.compress(raw, mtime=0)]
    return seeds


def checkpoint_seed():
    model = cnnext.Sequential([Conv2D(1, 2, 3, seed=0), ReLU(), MaxPool2D(2), Flatten(),
                               Dense(18, 3, seed=1)], input_shape=(1, 8, 8))
    model.optimizer = cnnext.optim.Adam()
    model.optimizer.step(model.parameters(), model.gradients())
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "m.npz")
        model.save(path)
        with open(path, "rb") as file:
            return file.read()


def archive_members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def with_header(members, header):
    stream = io.BytesIO()
    np.lib.format.write_array(stream, np.frombuffer(header, np.uint8))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, payload in {**members, META: stream.getvalue()}.items():
            archive.writestr(name, payload)
    return out.getvalue()


def run(call, documented):
    try:
        call()
    except documented as exc:
        outcomes[type(exc).__name__] += 1
        return
    outcomes["parsed"] += 1


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("idx", "checkpoint", "checkpoint-header"):
        sys.exit(__doc__)
    target = sys.argv[1]
    args = [sys.argv[0], *sys.argv[2:]]
    scratch = tempfile.mkdtemp(prefix="cnnext-fuzz-")
    path = os.path.join(scratch, "input.npz")
    if target == "idx":
        seeds = idx_seeds()

        def one_input(data):
            run(lambda: parse_idx(data, "<fuzz>", max_bytes=IDX_LIMIT), DataFileError)
    else:
        valid = checkpoint_seed()
        members = archive_members(valid)
        header = np.load(io.BytesIO(members[META])).tobytes()
        seeds = [valid] if target == "checkpoint" else [header]

        def one_input(data):
            content = data if target == "checkpoint" else with_header(members, data)
            with open(path, "wb") as file:
                file.write(content)
            run(lambda: cnnext.load_model(path), cnnext.CheckpointError)

    corpus = os.path.join(scratch, "seeds")
    os.makedirs(corpus)
    for i, seed in enumerate(seeds):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as file:
            file.write(seed)
    args.append(corpus)  # after any corpus of the caller's, where libFuzzer writes
    atexit.register(lambda: print(f"\n{target}: {sum(outcomes.values())} inputs: "
                                  f"{dict(outcomes)}", file=sys.stderr))
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
