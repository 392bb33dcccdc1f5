"""Checkpoints: save -> load round trips, atomic writes, and every kind of bad file."""

import io
import json
import os
import zipfile

import numpy as np
import pytest
from model_testing import bars, every_layer_model, small_cnn

import cnnext
from cnnext import CheckpointError, load_model, models, optim

META = "cnnext_checkpoint.npy"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained a little with momentum SGD, saved; and its data."""
    X, y = bars(64, seed=0)
    model = small_cnn(seed=1)
    model.fit(X, y, epochs=1, batch_size=16, optimizer=optim.SGD(lr=0.05, momentum=0.9),
              progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "model.npz"
    model.save(path)
    return model, path, X, y


def members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_members(path, contents, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=True)
    return buffer.getvalue()


def meta_of(contents):
    return json.loads(np.load(io.BytesIO(contents[META])).tobytes())


def with_meta(contents, meta):
    return {**contents, META: npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))}


def assert_same_model(a, b):
    assert [repr(layer) for layer in a.layers] == [repr(layer) for layer in b.layers]
    pa, pb = a.parameters(), b.parameters()
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name])
        assert pa[name].dtype == pb[name].dtype


# ------------------------------------------------------------------ round trips
def test_save_load_gives_identical_predictions_and_optimizer_state(trained):
    model, path, X, _ = trained
    loaded = load_model(path)
    assert_same_model(model, loaded)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.input_shape == model.input_shape == (1, 12, 12)
    assert loaded.optimizer.config() == model.optimizer.config()
    for name, entry in model.optimizer.state.items():
        np.testing.assert_array_equal(loaded.optimizer.state[name]["momentum_buffer"],
                                      entry["momentum_buffer"])


@pytest.mark.parametrize("optimizer", [optim.SGD(lr=0.02, momentum=0.5, nesterov=True),
                                       optim.Adam(lr=0.01, weight_decay=1e-3)], ids=repr)
def test_resuming_from_a_checkpoint_trains_exactly_like_not_stopping(tmp_path, optimizer):
    X, y = bars(48, seed=2)
    straight, resumed = small_cnn(seed=3), small_cnn(seed=3)
    straight.fit(X, y, epochs=2, batch_size=8, optimizer=optimizer, shuffle=False, progress=False)
    resumed.fit(X, y, epochs=1, batch_size=8, optimizer=type(optimizer)(**optimizer.config()),
                shuffle=False, progress=False)
    resumed.save(tmp_path / "half.npz")
    resumed = load_model(tmp_path / "half.npz")
    resumed.fit(X, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    assert_same_model(straight, resumed)


@pytest.mark.parametrize("build", [lambda: every_layer_model(dtype="float64"),
                                   models.lenet5, models.seed_cnn])
def test_every_layer_type_and_dtype_round_trips_without_an_optimizer(tmp_path, build):
    model = build()
    model.save(str(tmp_path / "m.npz"))
    loaded = load_model(str(tmp_path / "m.npz"))
    assert_same_model(model, loaded)
    assert loaded.optimizer is None and loaded.dtype == model.dtype


# ------------------------------------------------------------------ atomic writes
def test_an_interrupted_save_leaves_the_old_file_and_no_temporary(tmp_path, trained, monkeypatch):
    model, _, X, _ = trained
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        small_cnn(seed=9).save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    np.testing.assert_array_equal(load_model(path).predict(X), model.predict(X))


def test_save_replaces_an_existing_file_with_normal_permissions(tmp_path, trained):
    model, _, _, _ = trained
    path = tmp_path / "model.npz"
    path.write_bytes(b"old contents")
    model.save(path)
    assert_same_model(load_model(path), model)
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------ bad files
def test_not_a_zip_empty_and_missing_files(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("text.npz", "empty.npz"):
        with pytest.raises(CheckpointError, match=r"not a valid \.npz/zip archive"):
            load_model(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")
    assert issubclass(CheckpointError, ValueError) and cnnext.CheckpointError is CheckpointError


def test_an_unsupported_zip_version_is_rejected(tmp_path, trained):
    _, path, _, _ = trained
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the first central directory entry
    data[entry + 6:entry + 8] = (119).to_bytes(2, "little")  # needs zip version 11.9
    (tmp_path / "v.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "v.npz")


def test_a_foreign_npz_is_rejected(tmp_path):
    np.savez(tmp_path / "foreign.npz", weights=np.ones(3), labels=np.arange(4))
    with pytest.raises(CheckpointError, match="not a cnnext checkpoint"):
        load_model(tmp_path / "foreign.npz")


def test_every_truncation_is_rejected(tmp_path, trained):
    _, path, _, _ = trained
    data = path.read_bytes()
    for cut in sorted({1, 10, 100, len(data) // 3, len(data) // 2, len(data) - 200,
                       len(data) - 22, len(data) - 1}):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_model(tmp_path / "cut.npz")


def test_bit_flips_are_rejected_or_harmless(tmp_path, trained):
    """Every flipped byte gives a CheckpointError, or (in unchecked zip fields) the same model."""
    model, path, _, _ = trained
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    positions = sorted(set(rng.integers(0, len(data), 150)) | set(range(0, 64))
                       | set(range(len(data) - 120, len(data))))
    rejected = 0
    for position in positions:
        corrupt = bytearray(data)
        corrupt[position] ^= 1 << int(rng.integers(0, 8))
        (tmp_path / "flip.npz").write_bytes(bytes(corrupt))
        try:
            loaded = load_model(tmp_path / "flip.npz")
        except CheckpointError:
            rejected += 1
        else:
            assert_same_model(model, loaded)
    assert rejected > len(positions) // 2


def test_wrong_members_are_rejected(tmp_path, trained):
    _, path, _, _ = trained
    contents = members(path)
    cases = {
        "extra": {**contents, "params/9.weight.npy": npy(np.ones(2, np.float32))},
        "missing": {k: v for k, v in contents.items() if k != "params/4.weight.npy"},
        "renamed": {("params/4.weights.npy" if k == "params/4.weight.npy" else k): v
                    for k, v in contents.items()},
    }
    for name, case in cases.items():
        write_members(tmp_path / f"{name}.npz", case)
        with pytest.raises(CheckpointError, match="member"):
            load_model(tmp_path / f"{name}.npz")


@pytest.mark.parametrize(("array", "message"), [
    (np.ones((4, 1, 3, 2), np.float32), r"has shape \(4, 1, 3, 2\)"),
    (np.ones((4, 1, 3, 3), np.float64), "holds dtype float64, expected float32"),
    (np.ones((4, 1, 3, 3), np.int32), "holds dtype int32"),
    (np.full((4, 1, 3, 3), np.nan, np.float32), "NaN or infinite"),
    (np.array([{"__reduce__": "os.system"}] * 36, dtype=object).reshape(4, 1, 3, 3),
     "holds dtype object"),
    (np.zeros((4,), dtype=[("a", "<f4"), ("b", "<f4")]), "holds dtype"),
])
def test_arrays_that_differ_from_the_declaration_are_rejected(tmp_path, trained, array, message):
    _, path, _, _ = trained
    contents = members(path)
    contents["params/0.weight.npy"] = npy(array)
    write_members(tmp_path / "bad.npz", contents)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "bad.npz")


@pytest.mark.parametrize("damage", [(b"(4, 1, 3, 3)", b"(4, 1, 3( 3)"), (b"'descr'", b"'desc\\"),
                                    (b"(4, 1, 3, 3)", b"(" * 300 + b")" * 300)])
def test_damaged_npy_headers_are_rejected(tmp_path, trained, damage):
    _, path, _, _ = trained
    contents = members(path)
    damaged = contents["params/0.weight.npy"].replace(*damage)
    assert damaged != contents["params/0.weight.npy"]
    write_members(tmp_path / "bad.npz", {**contents, "params/0.weight.npy": damaged})
    with pytest.raises(CheckpointError, match=r"params/0\.weight\.npy"):
        load_model(tmp_path / "bad.npz")


def test_members_larger_or_shorter_than_declared_are_rejected(tmp_path, trained):
    _, path, _, _ = trained
    contents = members(path)
    good = contents["params/4.weight.npy"]
    for name, data, message in [
        ("padded", good + b"\0" * 5000, "larger"),
        ("trailing", good + b"\0" * 4, "bytes of data"),
        ("short", good[:-4], "bytes of data"),
    ]:
        write_members(tmp_path / f"{name}.npz", {**contents, "params/4.weight.npy": data})
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / f"{name}.npz")
    # A deflated member whose directory entry claims an impossible expansion.
    bomb = {**contents, "params/4.weight.npy": good[:128] + b"\0" * (50 << 20)}
    write_members(tmp_path / "bomb.npz", bomb, zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="larger"):
        load_model(tmp_path / "bomb.npz")


def test_a_tampered_header_is_rejected(tmp_path, trained):
    _, path, _, _ = trained
    contents = members(path)
    meta = meta_of(contents)

    def variant(change):
        copy = json.loads(json.dumps(meta))
        change(copy)
        return copy

    layers = lambda m: m["model"]["layers"]  # noqa: E731
    cases = [
        (variant(lambda m: m.update(format="other")), "format 'other'"),
        (variant(lambda m: m.update(format_version=2)), "format version 2"),
        (variant(lambda m: m.pop("optimizer")), "missing keys"),
        (variant(lambda m: m.update(extra=1)), "unknown keys"),
        (variant(lambda m: layers(m)[0].update(type="os.system")), "unknown layer type"),
        (variant(lambda m: layers(m)[0].update(type="__class__")), "unknown layer type"),
        (variant(lambda m: layers(m)[0]["config"].update(seed=1)), "invalid config"),
        (variant(lambda m: layers(m)[0]["config"].update(callback="print")),
         "invalid Conv2D config"),
        (variant(lambda m: layers(m)[0]["config"].update(kernel_size=[3, 3, 3])),
         "invalid Conv2D config"),
        (variant(lambda m: layers(m)[0]["config"].update(in_channels=2)),
         "more parameters than the file holds"),
        (variant(lambda m: (m["model"].update(input_shape=None),
                            layers(m)[0]["config"].update(kernel_size=[1, 9]))),
         r"parameter '0.weight' has shape \(4, 1, 3, 3\).*the layer needs \(4, 1, 1, 9\)"),
        (variant(lambda m: layers(m)[4]["config"].update(in_features=10**9)),
         "more parameters than the file holds"),
        (variant(lambda m: layers(m).pop(1)), "parameters|do not fit"),
        (variant(lambda m: m["model"].update(loss="__import__")), "unknown loss"),
        (variant(lambda m: m["params"]["0.weight"].update(shape=[4, 1, 3, 2])), "has shape"),
        (variant(lambda m: m["params"]["0.weight"].update(dtype=[])), "dtype must be"),
        (variant(lambda m: layers(m)[0]["config"].update(dtype="floatD32")),
         "invalid Conv2D config"),
        (variant(lambda m: m["optimizer"].update(type="Eval")), "unknown optimizer"),
        (variant(lambda m: m["optimizer"]["config"].update(lr=-1)), "invalid optimizer state"),
    ]
    for i, (meta_variant, message) in enumerate(cases):
        write_members(tmp_path / f"t{i}.npz", with_meta(contents, meta_variant))
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / f"t{i}.npz")
    raw_cases = [
        (b"{not json", "JSON header is invalid"),
        (b'{"format": NaN}', "JSON header is invalid"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"\xff\xfe", "JSON header is invalid"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON header is invalid"),
    ]
    for i, (raw, message) in enumerate(raw_cases):
        bad = {**contents, META: npy(np.frombuffer(raw, np.uint8))}
        write_members(tmp_path / f"r{i}.npz", bad)
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / f"r{i}.npz")
    write_members(tmp_path / "u.npz", {**contents, META: npy(np.array(["text"]))})
    with pytest.raises(CheckpointError, match="holds dtype <U4"):
        load_model(tmp_path / "u.npz")


def test_duplicate_members_are_rejected(tmp_path, trained):
    _, path, _, _ = trained
    contents = members(path)
    with pytest.warns(UserWarning, match="Duplicate name"), \
            zipfile.ZipFile(tmp_path / "dup.npz", "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
        archive.writestr("params/0.weight.npy", contents["params/0.weight.npy"])
    with pytest.raises(CheckpointError, match="appears twice"):
        load_model(tmp_path / "dup.npz")
