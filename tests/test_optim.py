"""Optimisers: hand-computed steps, torch.optim, state round trips, bad arguments."""

import numpy as np
import pytest

from cnnext import _dispatch, optim


def run(optimizer, params, grad_sequence):
    """Apply ``optimizer`` to copies of ``params`` for each dict of gradients in turn."""
    params = {k: v.copy() for k, v in params.items()}
    for grads in grad_sequence:
        optimizer.step(params, grads)
    return params


def test_plain_sgd_is_p_minus_lr_g():
    p = {"w": np.array([1.0, -2.0, 3.0])}
    g = {"w": np.array([0.5, 0.25, -1.0])}
    out = run(optim.SGD(lr=0.1), p, [g])
    np.testing.assert_allclose(out["w"], [0.95, -2.025, 3.1], rtol=1e-15)


def test_sgd_momentum_nesterov_and_weight_decay_by_hand():
    p0, g1, g2 = np.array([1.0, -1.0]), np.array([0.5, 2.0]), np.array([-1.0, 1.0])
    lr, m, wd = 0.1, 0.9, 0.01
    # momentum: buf1 = d1, buf2 = m buf1 + d2; with weight decay d = g + wd p.
    d1 = g1 + wd * p0
    p1 = p0 - lr * d1
    d2 = g2 + wd * p1
    buf2 = m * d1 + d2
    expected = p1 - lr * buf2
    out = run(optim.SGD(lr, momentum=m, weight_decay=wd), {"w": p0}, [{"w": g1}, {"w": g2}])
    np.testing.assert_allclose(out["w"], expected, rtol=1e-14)
    # Nesterov: step with d + m buf.
    p1 = p0 - lr * (g1 + m * g1)
    buf2 = m * g1 + g2
    expected = p1 - lr * (g2 + m * buf2)
    out = run(optim.SGD(lr, momentum=m, nesterov=True), {"w": p0}, [{"w": g1}, {"w": g2}])
    np.testing.assert_allclose(out["w"], expected, rtol=1e-14)


def test_adam_by_hand():
    p0, g1, g2 = np.array([0.5, -0.5]), np.array([0.1, -0.3]), np.array([0.2, 0.4])
    lr, b1, b2, eps = 0.01, 0.8, 0.9, 1e-6
    p, m, v = p0, 0.0, 0.0
    for t, g in enumerate((g1, g2), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    out = run(optim.Adam(lr, betas=(b1, b2), eps=eps), {"w": p0}, [{"w": g1}, {"w": g2}])
    np.testing.assert_allclose(out["w"], p, rtol=1e-13)


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.003, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.02)),
]


@pytest.mark.parametrize(("name", "config"), CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_steps_match_torch_optim(torch, name, config, dtype):
    rng = np.random.default_rng(0)
    shapes = {"0.weight": (4, 3), "0.bias": (4,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
             for _ in range(6)]
    ours = run(getattr(optim, name)(**config), params, grads)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    torch_config = dict(config, betas=tuple(config["betas"])) if "betas" in config else config
    reference = getattr(torch.optim, name)(list(tensors.values()), **torch_config)
    for step in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(step[k])
        reference.step()
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for k, t in tensors.items():
        np.testing.assert_allclose(ours[k], t.detach().numpy(), rtol=rtol, atol=rtol, err_msg=k)
        assert ours[k].dtype == np.dtype(dtype)


@pytest.mark.parametrize(("name", "config"), CONFIGS)
def test_state_dict_round_trip_continues_identically(name, config):
    rng = np.random.default_rng(1)
    params = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(5)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(4)]
    straight = run(getattr(optim, name)(**config), params, grads)
    first = getattr(optim, name)(**config)
    halfway = run(first, params, grads[:2])
    saved = first.state_dict()
    resumed = getattr(optim, name)()
    resumed.load_state_dict(saved)
    assert resumed.config() == first.config()
    out = run(resumed, halfway, grads[2:])
    for k in params:
        np.testing.assert_array_equal(out[k], straight[k])


def test_state_dict_holds_copies():
    sgd = optim.SGD(lr=0.1, momentum=0.5)
    params = {"w": np.ones(3)}
    sgd.step(params, {"w": np.ones(3)})
    saved = sgd.state_dict()
    saved["state"]["w"]["momentum_buffer"][:] = 99
    assert not np.any(sgd.state["w"]["momentum_buffer"] == 99)


@pytest.mark.parametrize("optimizer", [optim.SGD(lr=0.1, momentum=0.5), optim.Adam(lr=0.1)])
def test_state_copy_is_a_snapshot(optimizer):
    # Sequential.fit restores it when a step leaves the weights non-finite.
    params, grads = {"w": np.ones(3)}, {"w": np.full(3, 0.5)}
    optimizer.step(params, grads)
    snapshot = optimizer._state_copy()
    want = {k: np.copy(v) if isinstance(v, np.ndarray) else v
            for k, v in optimizer.state["w"].items()}
    optimizer.step(params, grads)
    assert snapshot["w"].keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_array_equal(snapshot["w"][key], value)
    assert any(not np.array_equal(snapshot["w"][k], optimizer.state["w"][k]) for k in want
               if isinstance(want[k], np.ndarray))


@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: optim.SGD(lr=-0.1), ValueError, "lr must be a finite number >= 0"),
    (lambda: optim.SGD(lr=float("nan")), ValueError, "lr must be a finite number"),
    (lambda: optim.SGD(lr="0.1"), TypeError, "lr must be a number"),
    (lambda: optim.SGD(lr=True), TypeError, "lr must be a number"),
    (lambda: optim.SGD(nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
    (lambda: optim.SGD(momentum=0.9, nesterov=1), TypeError, "nesterov must be True or False"),
    (lambda: optim.Adam(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be a finite number"),
    (lambda: optim.Adam(betas=0.9), TypeError, "betas must be a pair"),
    (lambda: optim.Adam(eps=-1), ValueError, "eps must be"),
])
def test_bad_hyperparameters_raise(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_bad_steps_and_states_raise():
    sgd = optim.SGD(lr=0.1, momentum=0.9)
    params = {"w": np.ones((2, 3))}
    with pytest.raises(ValueError, match="no gradient for parameter 'w'"):
        sgd.step(params, {})
    with pytest.raises(ValueError, match=r"gradient of 'w' has shape \(3, 2\)"):
        sgd.step(params, {"w": np.ones((3, 2))})
    with pytest.raises(ValueError, match="dtype float32"):
        sgd.step(params, {"w": np.ones((2, 3), dtype=np.float32)})
    np.testing.assert_array_equal(params["w"], 1)  # nothing applied
    sgd.step(params, {"w": np.ones((2, 3))})
    with pytest.raises(ValueError, match="call reset"):
        sgd.step({"w": np.ones(4)}, {"w": np.ones(4)})
    sgd.reset()
    sgd.step({"w": np.ones(4)}, {"w": np.ones(4)})
    with pytest.raises(ValueError, match="state is of a 'SGD' optimiser"):
        optim.Adam().load_state_dict(sgd.state_dict())
    bad = sgd.state_dict()
    bad["state"]["w"]["momentum_buffer"] = np.ones(4, dtype=object)
    with pytest.raises(TypeError, match="float32 or float64 array"):
        optim.SGD().load_state_dict(bad)
    bad = optim.Adam().state_dict()
    bad["state"] = {"w": {"exp_avg": np.ones(2), "exp_avg_sq": np.ones(3), "step": 1}}
    with pytest.raises(ValueError, match="differ in shape"):
        optim.Adam().load_state_dict(bad)
    bad["state"] = {"w": {"exp_avg": np.ones(2), "exp_avg_sq": np.ones(2), "step": -1}}
    with pytest.raises(ValueError, match="must be an int >= 0"):
        optim.Adam().load_state_dict(bad)


def numpy_sgd(p, g, buf, lr, momentum, weight_decay, nesterov):
    """torch.optim.SGD's formulas as NumPy ufuncs, in the parameter's dtype."""
    d = g + p * p.dtype.type(weight_decay) if weight_decay else g
    if momentum:
        buf[...] = buf * p.dtype.type(momentum) + d
        d = d + p.dtype.type(momentum) * buf if nesterov else buf
    return p - d * p.dtype.type(lr)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2]], ids=["plain", "nesterov_decay"])
def test_large_parameters_take_the_same_steps_as_the_numpy_formulas(dtype, config):
    """Every element of a parameter longer than any vector loop, head and tail."""
    rng = np.random.default_rng(2)
    p = rng.standard_normal(10_007).astype(dtype)
    grads = [rng.standard_normal(p.shape).astype(dtype) for _ in range(3)]
    sgd = optim.SGD(**config[1])
    ours, want, buf = p.copy(), p.copy(), np.zeros_like(p)
    for g in grads:
        sgd.step({"w": ours}, {"w": g})
        want = numpy_sgd(want, g, buf, config[1]["lr"], config[1].get("momentum", 0),
                         config[1].get("weight_decay", 0), config[1].get("nesterov", False))
    np.testing.assert_allclose(ours, want, rtol=1e-6 if dtype == "float32" else 1e-15)


@pytest.mark.parametrize("isa", list(_dispatch.built_variants("_optim")))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_instruction_set_build_rounds_each_operation(isa, dtype, monkeypatch):
    """No build fuses a multiply-add: SGD gives NumPy's bits, Adam the baseline build's."""
    module = _dispatch.built_variants("_optim")[isa]
    assert module.compiled_isa() == isa
    baseline = _dispatch.built_variants("_optim")["baseline"]
    rng = np.random.default_rng(3)
    p = rng.standard_normal(1_003).astype(dtype)
    grads = [rng.standard_normal(p.shape).astype(dtype) for _ in range(3)]
    for name, config in CONFIGS:
        results = []
        for kernels in (module, baseline):
            monkeypatch.setattr(optim, "_SGD_STEP", _dispatch.by_dtype(kernels.sgd_step))
            monkeypatch.setattr(optim, "_ADAM_STEP", _dispatch.by_dtype(kernels.adam_step))
            opt, ours = getattr(optim, name)(**config), p.copy()
            for g in grads:
                opt.step({"w": ours}, {"w": g})
            results.append(ours)
        np.testing.assert_array_equal(results[0], results[1])
        if name == "SGD":
            want, buf = p.copy(), np.zeros_like(p)
            for g in grads:
                want = numpy_sgd(want, g, buf, config["lr"], config.get("momentum", 0),
                                 config.get("weight_decay", 0), config.get("nesterov", False))
            np.testing.assert_array_equal(results[0], want)


def test_parameters_must_be_writeable_contiguous_floats():
    sgd = optim.SGD(lr=0.1)
    frozen = np.ones(3)
    frozen.flags.writeable = False
    for param, grad in [(np.ones((4, 4))[:, ::2], np.ones((4, 2))), (frozen, np.ones(3)),
                        (np.ones(3), np.ones(5)[::2])]:
        with pytest.raises(ValueError, match=r"SGD.step: parameter 'w' and its gradient must "
                                             r"be C-contiguous, the parameter writeable"):
            sgd.step({"w": param}, {"w": grad})
    with pytest.raises(TypeError, match="parameter 'w' has dtype float16"):
        optim.Adam().step({"w": np.ones(3, np.float16)}, {"w": np.ones(3, np.float16)})
    np.testing.assert_array_equal(frozen, 1)
