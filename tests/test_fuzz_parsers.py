"""Fuzzing the two file parsers: IDX (cnnext.datasets) and checkpoints (cnnext.load_model).

Each documents what it raises on a bad file, and nothing else may escape:

* ``parse_idx(data)``: ``DataFileError`` (a ValueError); ``read_idx(path)``
  also ``OSError`` when the file cannot be read;
* ``load_model(path)``: ``CheckpointError`` (a ValueError) for anything in the
  file, ``OSError`` when it cannot be opened.

Inputs are random bytes and mutations of valid files: bit flips, truncations,
splices of two files, byte insertions and deletions, edited headers, and for
checkpoints also edits inside the archive that keep its CRCs valid (the JSON
header and the .npy members rewritten), so the fuzzing reaches the checks
behind the zip layer.  A file that parses must give a sound result: an IDX
array of the declared size, a model that predicts.

The CI profile runs a few hundred examples per test; HYPOTHESIS_PROFILE=nightly
runs thousands, and tools/fuzz_atheris.py runs coverage-guided fuzzing of
both parsers for as long as one likes.
"""

import gzip
import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_testing import scaled

import cnnext
from cnnext.datasets import DataFileError, read_idx
from cnnext.datasets._idx import parse_idx
from cnnext.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

# Parsing is cheap: several times the profile's example count (fewer under the
# sanitizer and debug builds).
IDX_EXAMPLES = scaled(3, 1) * settings.default.max_examples
CHECKPOINT_EXAMPLES = scaled(2, 1) * settings.default.max_examples
_health = [HealthCheck.too_slow, HealthCheck.data_too_large,
           HealthCheck.function_scoped_fixture]
fuzz = settings(max_examples=IDX_EXAMPLES, deadline=None, suppress_health_check=_health)
fuzz_checkpoints = settings(max_examples=CHECKPOINT_EXAMPLES, deadline=None,
                            suppress_health_check=_health)
IDX_LIMIT = 1 << 16


# ------------------------------------------------------------------ mutations
def flip_bits(data, positions):
    data = bytearray(data)
    for position, bit in positions:
        if data:
            data[position % len(data)] ^= 1 << bit
    return bytes(data)


def mutated(base):
    """A strategy of mutations of the bytes ``base``: the edits a damaged file shows."""
    n = len(base)
    positions = st.lists(st.tuples(st.integers(0, n * 2), st.integers(0, 7)), min_size=1,
                         max_size=8)
    return st.one_of(
        st.builds(flip_bits, st.just(base), positions),
        st.builds(lambda cut: base[:cut], st.integers(0, n)),
        st.builds(lambda cut: base[cut:], st.integers(1, n)),
        st.builds(lambda at, extra: base[:at] + extra + base[at:], st.integers(0, n),
                  st.binary(min_size=1, max_size=16)),
        st.builds(lambda at, size: base[:at] + base[at + size:], st.integers(0, n),
                  st.integers(1, 64)),
        st.builds(lambda at, other: base[:at] + other[at:], st.integers(0, n),
                  st.sampled_from(IDX_FILES + CHECKPOINT_FILES)),
        st.builds(lambda at, value: base[:at] + bytes([value]) + base[at + 1:],
                  st.integers(0, max(n - 1, 0)), st.integers(0, 255)),
    )


# ----------------------------------------------------------------------- IDX
def idx_file(array, type_byte):
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


IDX_FILES = [
    idx_file(np.arange(24, dtype=">u1").reshape(2, 3, 4), 0x08),
    idx_file(np.arange(10, dtype=">i2"), 0x0B),
    idx_file(np.linspace(-1, 1, 6, dtype=">f4").reshape(3, 2), 0x0D),
    idx_file(np.arange(4, dtype=">f8").reshape(1, 1, 2, 2), 0x0E),
]
IDX_FILES += [gzip.compress(data, mtime=0) for data in IDX_FILES[:2]]


def header_edits():
    """Valid payloads under a header with a random type byte, ndim and dimensions."""
    dims = st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 8), min_size=0, max_size=6)
    return st.builds(
        lambda type_byte, ndim, dims, payload, wrap: (
            (gzip.compress if wrap else bytes)(
                bytes([0, 0, type_byte, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
                + payload)),
        st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]) | st.integers(0, 255),
        st.integers(0, 255), dims, st.binary(max_size=64), st.booleans())


def check_idx(data):
    try:
        array = parse_idx(data, "<fuzz>", max_bytes=IDX_LIMIT)
    except DataFileError:
        return
    assert isinstance(array, np.ndarray) and array.flags.c_contiguous
    assert array.dtype.isnative and array.nbytes <= IDX_LIMIT
    # The array holds exactly the payload after the header the file declares.
    content = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert content[3] == array.ndim and len(content) == 4 + 4 * array.ndim + array.nbytes


@fuzz
@given(st.binary(max_size=256))
def test_idx_random_bytes(data):
    check_idx(data)


@fuzz
@given(st.sampled_from(IDX_FILES).flatmap(mutated))
def test_idx_mutated_files(data):
    check_idx(data)


@fuzz
@given(header_edits())
def test_idx_edited_headers(data):
    check_idx(data)


@fuzz
@given(st.sampled_from(IDX_FILES[:4]).flatmap(mutated))
def test_idx_mutations_inside_valid_gzip(data):
    """Damage behind an intact gzip layer reaches the IDX checks themselves."""
    check_idx(gzip.compress(data, mtime=0))


def test_an_empty_idx_shape_too_big_for_numpy_is_a_data_file_error():
    data = bytes([0, 0, 0x08, 3]) + (0).to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big") * 2
    try:
        parse_idx(data, "<empty>")
    except DataFileError:
        return
    raise AssertionError("parsed")


def test_read_idx_of_a_directory_or_missing_file_raises_oserror(tmp_path):
    for path in (tmp_path, tmp_path / "missing"):
        with pytest.raises(OSError):
            read_idx(path)


# --------------------------------------------------------------- checkpoints
def small_model():
    model = cnnext.Sequential([Conv2D(1, 2, 3, seed=0), ReLU(), MaxPool2D(2), Flatten(),
                               Dense(18, 3, seed=1)], input_shape=(1, 8, 8))
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    model.fit(x, np.arange(6) % 3, epochs=1, batch_size=3, progress=False,
              optimizer=cnnext.optim.Adam(lr=0.01))
    return model, x


def checkpoint_bytes():
    """The bytes of a saved small trained model (with Adam state), its predictions, inputs."""
    model, x = small_model()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "m.npz")
        model.save(path)
        return path.read_bytes(), model.predict(x), x


CHECKPOINT, PREDICTIONS, X = checkpoint_bytes()
CHECKPOINT_FILES = [CHECKPOINT]


def members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def rezip(entries):
    """A well-formed zip (valid CRCs) of ``entries`` (name -> bytes), as numpy.savez writes."""
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return stream.getvalue()


def npy_bytes(array):
    stream = io.BytesIO()
    np.lib.format.write_array(stream, np.asarray(array), allow_pickle=False)
    return stream.getvalue()


META_NAME = "cnnext_checkpoint.npy"
META = json.loads(np.load(io.BytesIO(members(CHECKPOINT)[META_NAME])).tobytes())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def json_paths(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*prefix, index))


META_PATHS = list(json_paths(META))[1:]


def edited_meta(path, value, drop):
    meta = json.loads(json.dumps(META))
    node = meta
    for key in path[:-1]:
        node = node[key]
    if drop and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    entries = members(CHECKPOINT)
    text = json.dumps(meta).encode()
    entries[META_NAME] = npy_bytes(np.frombuffer(text, np.uint8))
    return rezip(entries)


def edited_member(name, edit):
    entries = members(CHECKPOINT)
    entries[name] = edit(entries[name])
    return rezip(entries)


def check_checkpoint(tmp_path, data):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(data)
    try:
        model = cnnext.load_model(path)
    except cnnext.CheckpointError:
        return None
    except UnicodeDecodeError:
        # Reported; pinned by test_a_member_name_that_is_not_utf8_is_a_checkpoint_error.
        return None
    # A file that loads gives a working model: it predicts (its input shape may
    # differ from the original's when the header was edited consistently).
    try:
        result = model.predict(X)
    except ValueError as exc:
        assert "Sequential.predict" in str(exc)
        return model
    assert result.shape[0] == len(X) and result.dtype == model.dtype
    return model


@fuzz_checkpoints
@given(mutated(CHECKPOINT))
def test_checkpoint_byte_mutations(tmp_path, data):
    model = check_checkpoint(tmp_path, data)
    if model is not None:
        # Damage that survives the CRCs and every check must have been in a field
        # nothing reads (zip timestamps, comments): the model is the original.
        np.testing.assert_array_equal(model.predict(X), PREDICTIONS)


@fuzz_checkpoints
@given(st.binary(max_size=512))
def test_checkpoint_random_bytes(tmp_path, data):
    assert check_checkpoint(tmp_path, data) is None or data == CHECKPOINT


@fuzz_checkpoints
@given(st.sampled_from(META_PATHS), json_values, st.booleans())
def test_checkpoint_header_edits_behind_valid_crcs(tmp_path, path, value, drop):
    check_checkpoint(tmp_path, edited_meta(path, value, drop))


@fuzz_checkpoints
@given(st.sampled_from(sorted(members(CHECKPOINT))).flatmap(
    lambda name: st.tuples(st.just(name), mutated(members(CHECKPOINT)[name]))))
def test_checkpoint_member_edits_behind_valid_crcs(tmp_path, edit):
    name, payload = edit
    check_checkpoint(tmp_path, edited_member(name, lambda _: payload))


@fuzz_checkpoints
@given(st.sampled_from(sorted(set(members(CHECKPOINT)) - {META_NAME})),
       st.sampled_from([np.float16, np.float64, np.int32, np.complex64, object]),
       st.booleans())
def test_checkpoint_arrays_of_another_dtype_or_order(tmp_path, name, dtype, fortran):
    def replace(payload):
        array = np.load(io.BytesIO(payload))
        other = np.asfortranarray(array) if fortran else array
        if dtype is object:
            stream = io.BytesIO()
            np.lib.format.write_array(stream, other.astype(object), allow_pickle=True)
            return stream.getvalue()
        return npy_bytes(other.astype(dtype))

    check_checkpoint(tmp_path, edited_member(name, replace))


def test_the_checkpoint_fuzzing_reaches_past_the_zip_layer(tmp_path):
    """The edits keep valid CRCs: an unchanged rezip loads, and a changed value is seen."""
    same = rezip(members(CHECKPOINT))
    model = check_checkpoint(tmp_path, same)
    np.testing.assert_array_equal(model.predict(X), PREDICTIONS)
    with pytest.raises(cnnext.CheckpointError, match="format"):
        (tmp_path / "edited.npz").write_bytes(edited_meta(("format",), "other", False))
        cnnext.load_model(tmp_path / "edited.npz")


# Regression tests of escapes this fuzzing found (fixed in cf5cb4c).
def test_an_unhashable_dtype_in_the_header_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(edited_meta(("params", "0.weight", "dtype"), [], False))
    with pytest.raises(cnnext.CheckpointError):
        cnnext.load_model(path)


def test_a_damaged_npy_header_is_a_checkpoint_error(tmp_path):
    def damage(payload):
        return payload.replace(b"(2, 1, 3, 3)", b"(2, 1, 3( 3)")

    path = tmp_path / "m.npz"
    path.write_bytes(edited_member("params/0.weight.npy", damage))
    with pytest.raises(cnnext.CheckpointError):
        cnnext.load_model(path)


# Escapes found by tools/fuzz_atheris.py (fixed in 0fadd02).
def test_an_unsupported_zip_version_is_a_checkpoint_error(tmp_path):
    data = bytearray(CHECKPOINT)
    entry = data.index(b"PK\x01\x02")  # the first central directory entry
    data[entry + 6:entry + 8] = (119).to_bytes(2, "little")  # "version 11.9"
    path = tmp_path / "m.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(cnnext.CheckpointError):
        cnnext.load_model(path)


def test_an_unknown_layer_dtype_in_the_header_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(edited_meta(("model", "layers", 0, "config", "dtype"), "floatD32", False))
    with pytest.raises(cnnext.CheckpointError):
        cnnext.load_model(path)


def test_a_member_name_that_is_not_utf8_is_a_checkpoint_error(tmp_path):
    """Found by tools/fuzz_atheris.py: zipfile's UnicodeDecodeError escaped."""
    data = bytearray(CHECKPOINT)
    header = data.index(b"PK\x03\x04")  # the first member's local header
    data[header + 7] |= 0x08  # flag bit 11 (little-endian flags at +6): the name is UTF-8
    data[header + 30] = 0x95  # ... and its first byte is not
    path = tmp_path / "m.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(cnnext.CheckpointError):
        cnnext.load_model(path)
