"""engine/structured.py and the StructuredLinear layer (Sindhwani, Sainath & Kumar, NIPS 2015):
the FFT transforms against W assembled entry by entry in float64 from the paper's definitions,
gradients by finite differences, the displacement rank of W under the paper's operator, the
layer's spec, checkpoint and .rcnn round trips, malformed configs, and an attack through it."""

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_op

from robustcnn.compress.modelfile import load_model, save_model
from robustcnn.engine import Linear, Net, ReLU, StructuredLinear
from robustcnn.engine import structured as S
from robustcnn.engine.checkpoint import load_net, save_checkpoint

# ---------------------------------------------------------------------------------------------
# The reference: the paper's matrices, entry by entry, in float64


def f_circulant(v, f):
    """Z_f(v) = Σ_k v[k] Z_f^k: entry (i, j) is v[i − j] on and below the diagonal and
    f · v[n + i − j] above it (f = 1 circulant, f = −1 skew-circulant)."""
    n = len(v)
    z = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            z[i, j] = v[i - j] if i >= j else f * v[n + i - j]
    return z


def unit_shift(n, f):
    """Z_f: ones below the diagonal, f in the top right corner."""
    z = np.zeros((n, n))
    z[np.arange(1, n), np.arange(n - 1)] = 1.0
    z[0, n - 1] = f
    return z


def reference_weight(g, h=None):
    """W = Z_1(g) (circulant) or Σ_k Z_1(g_k) Z_−1(h_k) (Toeplitz-like), float64 (n, n)."""
    g = np.asarray(g, np.float64)
    if h is None:
        return f_circulant(g, 1.0)
    return sum(f_circulant(g[k], 1.0) @ f_circulant(np.asarray(h[k], np.float64), -1.0)
               for k in range(g.shape[0]))


def test_reference_matches_the_shift_powers(rng):
    """The entry formula is Σ_k v[k] Z_f^k, the paper's definition of Z_f(v)."""
    v = rng.standard_normal(6)
    for f in (1.0, -1.0):
        powers = sum(v[k] * np.linalg.matrix_power(unit_shift(6, f), k) for k in range(6))
        assert_close(f_circulant(v, f), powers, 1e-14, f"Z_{f:g}(v)")


# ---------------------------------------------------------------------------------------------
# Transforms: forward vs the dense matrix, backward vs its transpose and finite differences

SIZES = [(8, 8), (5, 7), (7, 5), (1, 4), (16, 16), (13, 9)]  # (in, out)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("in_f,out_f", SIZES)
def test_circulant(in_f, out_f, dtype, rng):
    n = S.transform_size(in_f, out_f)
    x, g = rng.standard_normal((3, in_f)), rng.standard_normal(n)

    def ref(x, g):
        return x @ reference_weight(g)[:out_f, :in_f].T

    def ref_backward(dy, x, g):
        W = reference_weight(g)[:out_f, :in_f]
        dg = np.empty(n)
        for k in range(n):  # dW/dg_k is Z_1(e_k), cut to (out, in)
            e = np.zeros(n)
            e[k] = 1.0
            dg[k] = np.sum(dy * (x @ reference_weight(e)[:out_f, :in_f].T))
        return dy @ W, dg

    def backward(dy, x, g):
        return S.circulant_backward(dy, x, g)

    check_op(lambda x, g: S.circulant_forward(x, g, out_f), ref, [x, g], backward=backward,
             ref_backward=ref_backward, wrt=(0, 1), dtype=dtype, rtol=_rtol(dtype),
             grad_rtol=_rtol(dtype), what=f"circulant {in_f}->{out_f}")


def _rtol(dtype):
    return 1e-12 if dtype == F64 else 2e-5


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("rank", [1, 2, 4])
@pytest.mark.parametrize("in_f,out_f", SIZES)
def test_toeplitz_like(in_f, out_f, rank, dtype, rng):
    n = S.transform_size(in_f, out_f)
    if rank > n:
        pytest.skip("rank above the transform size")
    x = rng.standard_normal((3, in_f))
    g, h = rng.standard_normal((rank, n)), rng.standard_normal((rank, n))

    def op(x, g, h):
        return S.toeplitz_like_forward(x, g, h, out_f)[0]

    def ref(x, g, h):
        return x @ reference_weight(g, h)[:out_f, :in_f].T

    def ref_backward(dy, x, g, h):
        # Σ dy·y is linear in each generator: its gradient entry k is its value at e_k.
        def partial(which):
            out = np.empty((rank, n))
            for k in range(rank):
                for j in range(n):
                    e = np.zeros(n)
                    e[j] = 1.0
                    W = (f_circulant(e, 1) @ f_circulant(h[k], -1) if which == "g"
                         else f_circulant(g[k], 1) @ f_circulant(e, -1))
                    out[k, j] = np.sum(dy * (x @ W[:out_f, :in_f].T))
            return out
        return dy @ reference_weight(g, h)[:out_f, :in_f], partial("g"), partial("h")

    def backward(dy, x, g, h):
        _, saved = S.toeplitz_like_forward(x, g, h, out_f)
        return S.toeplitz_like_backward(dy, saved, g, h, in_f)

    check_op(op, ref, [x, g, h], backward=backward, ref_backward=ref_backward, wrt=(0, 1, 2),
             dtype=dtype, rtol=_rtol(dtype), grad_rtol=_rtol(dtype),
             what=f"toeplitz-like r={rank} {in_f}->{out_f}")


def test_backward_skips_what_is_not_asked(rng):
    x, g, h = rng.standard_normal((2, 6)), rng.standard_normal((2, 6)), rng.standard_normal((2, 6))
    _, saved = S.toeplitz_like_forward(x, g, h, 6)
    dy = rng.standard_normal((2, 6))
    dx, dg, dh = S.toeplitz_like_backward(dy, saved, g, h, 6, need_weight=False)
    assert dx is not None and dg is None and dh is None
    dx, dg, dh = S.toeplitz_like_backward(dy, saved, g, h, 6, need_input=False)
    assert dx is None and dg.shape == g.shape and dh.shape == h.shape


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_displacement_rank(rank, rng):
    """Z_1 W − W Z_−1 = 2 G (J H)ᵀ: rank ≤ r (module docstring), and a circulant's ≤ 1."""
    n = 10
    g, h = rng.standard_normal((rank, n)), rng.standard_normal((rank, n))
    W = reference_weight(g, h)
    displacement = unit_shift(n, 1) @ W - W @ unit_shift(n, -1)
    assert_close(displacement, 2 * g.T @ h[:, ::-1], 1e-12, "displacement")
    assert np.linalg.matrix_rank(displacement, tol=1e-9) == rank  # generic generators: equal
    C = reference_weight(g[0])
    assert np.linalg.matrix_rank(unit_shift(n, 1) @ C - C @ unit_shift(n, -1), tol=1e-9) <= 1
    # The paper's own parameterisation M = ½ Σ Z_1(g_k) Z_−1(J h_k) has displacement G Hᵀ.
    M = 0.5 * reference_weight(g, h[:, ::-1])
    assert_close(unit_shift(n, 1) @ M - M @ unit_shift(n, -1), g.T @ h, 1e-12, "paper's ∇[M]")


def test_a_toeplitz_matrix_is_toeplitz_like_of_rank_two(rng):
    """The family is the paper's: a Toeplitz matrix has displacement rank ≤ 2 under ∇."""
    n = 9
    c = rng.standard_normal(2 * n - 1)
    T = np.array([[c[i - j + n - 1] for j in range(n)] for i in range(n)])
    assert np.linalg.matrix_rank(unit_shift(n, 1) @ T - T @ unit_shift(n, -1), tol=1e-9) <= 2


# ---------------------------------------------------------------------------------------------
# The layer


def structured_net(structure="toeplitz-like", rank=2, dtype=np.float64, seed=0):
    return Net([StructuredLinear("s1", 12, structure=structure, rank=rank), ReLU("relu1"),
                StructuredLinear("s2", 5, structure=structure, rank=rank)],
               (1, 3, 3), dtype=dtype, seed=seed, name="structured")


@pytest.mark.parametrize("structure,rank", [("circulant", 1), ("toeplitz-like", 1),
                                            ("toeplitz-like", 3)])
def test_layer_matches_its_dense_weight(structure, rank, rng):
    net = structured_net(structure, rank)
    layer = net.layer("s1")
    layer.params["bias"][...] = rng.standard_normal(12)
    x = rng.standard_normal((4, 1, 3, 3))
    y = net.forward(x, output="s1")
    params = {k: v for k, v in layer.params.items() if k != "bias"}
    W = reference_weight(params["g"], params.get("h"))[:12, :9]
    assert_close(y, x.reshape(4, 9) @ W.T + layer.params["bias"], 1e-12, "layer forward")
    assert_close(layer.dense_weight(), W, 1e-12, "dense_weight")
    n = 12
    expected = n * (1 if structure == "circulant" else 2 * rank) + 12
    assert layer.dense_param_count() == expected
    assert layer.param_values([(1, 3, 3)]) == expected


def test_layer_input_gradient_by_finite_differences(rng):
    """dloss/dx through two structured layers (what gradient attacks call) against central
    differences of the summed per-example loss."""
    net = structured_net("toeplitz-like", 2)
    x = rng.standard_normal((3, 1, 3, 3))
    labels = np.array([0, 3, 4])
    _, dx = net.loss_and_input_grad(x, labels)
    h = 1e-6
    for i in rng.choice(x.size, 8, replace=False):
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += h
        xm.flat[i] -= h
        fd = (net.loss_and_input_grad(xp, labels)[0].sum()
              - net.loss_and_input_grad(xm, labels)[0].sum()) / (2 * h)
        assert abs(fd - dx.flat[i]) <= 1e-6 * max(1.0, abs(fd)), (i, fd, dx.flat[i])


@pytest.mark.parametrize("structure,rank", [("circulant", 1), ("toeplitz-like", 2)])
def test_layer_parameter_gradients_by_finite_differences(structure, rank, rng):
    """Net.backward's gradients of Σ dy·y w.r.t. every generator and bias, against central
    differences of the forward pass."""
    net = structured_net(structure, rank)
    x = rng.standard_normal((3, 1, 3, 3))
    dy = rng.standard_normal((3, 5))
    net.forward_for_backward(x)
    net.backward(dy, param_grads=True, input_grad=False)
    grads = {name: {k: np.array(v) for k, v in g.items()} for name, g in net.grads.items()}
    h = 1e-6
    for lname in ("s1", "s2"):
        params = net.layer(lname).params
        assert set(grads[lname]) == set(params)
        for key, value in params.items():
            for i in rng.choice(value.size, min(value.size, 6), replace=False):
                old = value.flat[i]
                value.flat[i] = old + h
                lp = float(np.sum(dy * net.forward(x)))
                value.flat[i] = old - h
                lm = float(np.sum(dy * net.forward(x)))
                value.flat[i] = old
                fd = (lp - lm) / (2 * h)
                got = grads[lname][key].flat[i]
                assert abs(fd - got) <= 1e-6 * max(1.0, abs(fd)), (lname, key, i, fd, got)


@pytest.mark.parametrize("structure,rank", [("circulant", 1), ("toeplitz-like", 3)])
def test_spec_checkpoint_and_model_file_round_trips(structure, rank, rng, tmp_path):
    net = structured_net(structure, rank, dtype=np.float32, seed=3)
    net.layer("s1").params["bias"][...] = rng.standard_normal(12)
    x = rng.random((4, 1, 3, 3)).astype(np.float32)
    y = net.forward(x)
    spec = net.spec()
    again = Net.from_spec(spec, init=False)
    again.load_state_dict(net.state_dict())
    assert again.spec() == spec
    assert_close(again.forward(x), y, 0, "from_spec")
    save_checkpoint(tmp_path / "s.h5", net)
    loaded, _ = load_net(tmp_path / "s.h5")
    assert loaded.layer("s2").config() == net.layer("s2").config()
    assert_close(loaded.forward(x), y, 0, "checkpoint")
    save_model(tmp_path / "s.rcnn", net)
    loaded, _ = load_model(tmp_path / "s.rcnn")
    assert_close(loaded.forward(x), y, 0, ".rcnn")
    assert loaded.num_params() == net.num_params() == net.num_dense_params()


@pytest.mark.parametrize("kwargs,message", [
    (dict(structure="hankel"), r"s1 \(StructuredInnerProduct\): unknown structure 'hankel'"),
    (dict(rank=0), r"s1 \(StructuredInnerProduct\): rank must be an integer >= 1, got 0"),
    (dict(rank=1.5), r"s1 \(StructuredInnerProduct\): rank must be an integer >= 1"),
    (dict(rank="2"), r"s1 \(StructuredInnerProduct\): rank must be an integer >= 1"),
    (dict(out_features=0), r"s1 \(StructuredInnerProduct\): out_features must be an integer"),
    (dict(structure="circulant", rank=2), r"s1 \(StructuredInnerProduct\): a circulant weight "
                                          r"has rank 1, got rank=2"),
    (dict(rank=40), r"s1 \(StructuredInnerProduct\): rank 40 exceeds the transform size 12"),
])
def test_malformed_config_is_one_line_value_error(kwargs, message):
    spec = structured_net().spec()
    spec["layers"][0].update(kwargs)
    with pytest.raises(ValueError, match=message) as info:
        Net.from_spec(spec, source="net.json")
    assert "\n" not in str(info.value) and str(info.value).startswith("net.json: ")


def test_a_mismatched_generator_is_refused(tmp_path):
    net = structured_net()
    state = dict(net.state_dict())
    state["s1/h"] = np.zeros((3, 12))
    with pytest.raises(ValueError, match=r"s1/h has shape \(3, 12\), the net expects \(2, 12\)"):
        net.load_state_dict(state, source="w.h5")


def test_initial_weights_have_xavier_variance():
    """generator_std gives W's entries variance 1/fan_in in expectation (the entries of one
    draw share their generators, so the check averages a few draws of the assembled W)."""
    for structure, rank in (("circulant", 1), ("toeplitz-like", 1), ("toeplitz-like", 4)):
        var = np.mean([Net([StructuredLinear("s", 128, structure=structure, rank=rank)],
                           (128,), dtype=np.float64, seed=seed).layer("s").dense_weight().var()
                       for seed in range(8)])
        assert 0.75 / 128 < var < 1.33 / 128, (structure, rank, var * 128)


def test_attack_through_structured_layers(rng):
    """FGSM moves the input along the sign of the input gradient and raises the loss."""
    from robustcnn.attacks import fgsm

    net = Net([StructuredLinear("s1", 32, rank=2), ReLU("relu1"), Linear("out", 4)],
              (1, 4, 4), dtype=np.float64, seed=0)
    x = rng.random((16, 1, 4, 4))
    labels = net.predict(x)
    adv = fgsm(net, x, labels, eps=0.05, clip=(0.0, 1.0))
    assert np.abs(adv - x).max() <= 0.05 + 1e-12
    _, dx = net.loss_and_input_grad(x, labels)
    free = (x > 0.05) & (x < 0.95) & (dx != 0)
    assert np.array_equal(np.sign(adv - x)[free], np.sign(dx)[free])
    before = net.loss_and_input_grad(x, labels)[0].sum()
    after = net.loss_and_input_grad(adv, labels)[0].sum()
    assert after > before
