"""Shared test helpers: run an op in robustcnn and in a float64 reference; finite differences.

``check_op`` is the one helper every kernel test goes through (tinygrad's ``helper_test_op``):
it runs the engine op and a reference written independently in NumPy/SciPy float64 on the same
inputs, and checks the output's shape, dtype and values, then the gradients' shapes, dtypes and
values against the reference's backward and, in float64, against central finite differences of
the engine's own forward (``check_gradients``). Forward, reference-gradient and
finite-difference checks have separate tolerances.

Tolerances are relative to the scale of the expected array (its largest magnitude), so that one
number fits outputs of any size: ``max |actual − expected| ≤ atol + rtol · max |expected|``.

Imported as ``from helpers import ...`` (``tests/`` is on pytest's ``pythonpath``).
"""

import contextlib

import numba
import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)

# Default forward / reference-gradient tolerances, relative to the output scale.
RTOL = {F64: 1e-10, F32: 1e-5}


def assert_close(actual, expected, rtol, what, *, atol=0.0):
    """Assert ``max |actual − expected| ≤ atol + rtol · max |expected|``; NaN never passes.

    The comparison is made in float64; the message names ``what``, the worst cell and the scale.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, \
        f"{what}: shape {actual.shape} does not match the reference {expected.shape}"
    if expected.size == 0:
        return
    err = np.abs(actual.astype(np.float64) - expected)
    scale = float(np.abs(expected).max())
    tol = atol + rtol * scale
    if np.isnan(err).any():
        where = np.unravel_index(int(np.flatnonzero(np.isnan(err))[0]), err.shape)
        raise AssertionError(f"{what}: NaN at {where} (got {actual[where]!r}, "
                             f"want {expected[where]!r})")
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    if not err[worst] <= tol:
        raise AssertionError(
            f"{what}: max |error| {err[worst]:.3g} at {worst} (got {actual[worst]!r}, want "
            f"{expected[worst]!r}) exceeds {tol:.3g} = {atol:g} + {rtol:g} × scale {scale:.3g}")


def _cast(a, dtype):
    """Float arrays to ``dtype``; anything else (labels, None) unchanged."""
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return a.astype(dtype)
    return a


def _as_tuple(grads):
    return tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)


def check_op(op, reference, inputs, *, backward=None, ref_backward=None, wrt=(0,),
             dtype=np.float64, rtol=None, grad_rtol=None, atol=0.0, fd=True, fd_rtol=1e-6,
             fd_samples=16, seed=0, what=None):
    """Run ``op`` in robustcnn and ``reference`` in float64 on the same inputs; check everything.

    op(*inputs) → y                    the engine, on ``inputs`` cast to ``dtype``
    reference(*inputs64) → y64         independent NumPy/SciPy float64 code, on the same values
    backward(dy, *inputs) → grads      the engine's gradients of Σ dy·y w.r.t. inputs[k], k ∈ wrt
    ref_backward(dy64, *inputs64)      the reference's gradients, aligned with ``wrt``

    Float arrays in ``inputs`` are cast to ``dtype`` (others, such as labels, pass unchanged);
    the reference sees those cast values in float64, so only the engine's arithmetic differs.
    Checks: y's type, shape and dtype; y against the reference (``rtol``, default 1e-10 for
    float64, 1e-5 for float32); each gradient's shape and dtype; gradients against
    ``ref_backward`` (``grad_rtol``, same defaults); in float64 with ``fd``, gradients against
    central finite differences of ``op`` (``fd_rtol``, ``fd_samples`` coordinates per input);
    and that no input was modified. Returns (y, grads, dy).
    """
    dtype = np.dtype(dtype)
    what = what or getattr(op, "__name__", "op")
    rtol = RTOL[dtype] if rtol is None else rtol
    grad_rtol = RTOL[dtype] if grad_rtol is None else grad_rtol
    xs = [_cast(a, dtype) for a in inputs]
    xs64 = [_cast(a, F64) for a in xs]
    before = [None if a is None else np.array(a, copy=True) for a in xs]

    y = op(*xs)
    assert isinstance(y, np.ndarray), f"{what}: returned {type(y).__name__}, not an ndarray"
    assert y.dtype == dtype, f"{what}: output dtype {y.dtype}, expected {dtype}"
    y_ref = reference(*xs64)
    assert y.shape == y_ref.shape, f"{what}: output shape {y.shape}, reference {y_ref.shape}"
    assert_close(y, y_ref, rtol, f"{what} forward ({dtype})", atol=atol)

    grads, dy = (), None
    if backward is not None:
        rng = np.random.default_rng(seed + 1)
        dy = rng.standard_normal(y.shape).astype(dtype)
        grads = _as_tuple(backward(dy, *xs))
        assert len(grads) == len(wrt), f"{what}: backward returned {len(grads)} gradients for {wrt}"
        for k, g in zip(wrt, grads):
            assert isinstance(g, np.ndarray), f"{what}: gradient {k} is {type(g).__name__}"
            assert g.shape == xs[k].shape, \
                f"{what}: gradient {k} shape {g.shape}, input shape {xs[k].shape}"
            assert g.dtype == dtype, f"{what}: gradient {k} dtype {g.dtype}, expected {dtype}"
        if ref_backward is not None:
            refs = _as_tuple(ref_backward(dy.astype(np.float64), *xs64))
            assert len(refs) == len(wrt)
            for k, g, r in zip(wrt, grads, refs):
                assert_close(g, r, grad_rtol, f"{what} gradient {k} ({dtype})", atol=atol)
        if fd and dtype == F64:
            check_gradients(op, xs, dy, grads, wrt, samples=fd_samples, rtol=fd_rtol,
                            seed=seed, what=what)

    for k, (a, b) in enumerate(zip(xs, before)):
        # Deliberately exact: an op must not write to its inputs at all.
        assert b is None or np.array_equal(a, b), f"{what}: modified its input {k}"
    return y, grads, dy


def check_gradients(f, inputs, dy, grads, wrt=(0,), *, samples=16, h=1e-6, rtol=1e-6,
                    seed=0, what="f"):
    """Central finite differences of L = Σ dy · f(*inputs) w.r.t. inputs[k] (k ∈ wrt), in float64.

    ``grads`` are the analytic gradients (aligned with ``wrt``). Every coordinate is checked for
    inputs with at most ``samples`` entries, else ``samples`` coordinates drawn at random. The
    error is measured relative to the larger of the analytic gradient's and the differences'
    largest magnitude: ``max |fd − grad| ≤ rtol · scale``.
    """
    rng = np.random.default_rng(seed + 2)
    dy = np.asarray(dy, dtype=np.float64)
    with single_thread():
        _finite_differences(f, inputs, dy, grads, wrt, samples, h, rtol, rng, what)


@contextlib.contextmanager
def single_thread():
    """Run Numba's parallel kernels on one thread inside the block.

    Finite differences call an op hundreds of times on tiny arrays; waking the thread pool for
    each call costs more than the work (milliseconds when other processes hold the cores). The
    thread split is tested by the forward and backward comparisons, which use every thread.
    """
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _finite_differences(f, inputs, dy, grads, wrt, samples, h, rtol, rng, what):
    for k, g in zip(wrt, _as_tuple(grads)):
        x = inputs[k]
        assert x.dtype == F64, f"{what}: finite differences need float64 inputs, got {x.dtype}"
        n = x.size
        idx = np.arange(n) if n <= samples else np.sort(rng.choice(n, samples, replace=False))
        fd = np.empty(len(idx))
        args = list(inputs)
        for t, i in enumerate(idx):
            xp = x.copy()
            xp.flat[i] += h
            args[k] = xp
            # Copies: an op may return a view of its input (flatten), which the next step changes.
            yp = np.array(f(*args), dtype=np.float64, copy=True)
            xp.flat[i] -= 2 * h
            ym = np.array(f(*args), dtype=np.float64, copy=True)
            # Difference the outputs first: no cancellation between two large sums.
            fd[t] = float(np.sum(dy * (yp - ym))) / (2 * h)
        analytic = np.asarray(g, dtype=np.float64).reshape(-1)[idx]
        scale = max(float(np.abs(g).max()) if g.size else 0.0, float(np.abs(fd).max(initial=0.0)))
        err = np.abs(fd - analytic)
        if err.size and not err.max() <= rtol * scale:
            t = int(np.nanargmax(err)) if not np.isnan(err).all() else 0
            coord = np.unravel_index(int(idx[t]), x.shape)
            raise AssertionError(
                f"{what}: gradient {k} at {coord} is {analytic[t]!r}, finite differences give "
                f"{fd[t]!r} (error {err[t]:.3g} > {rtol:g} × scale {scale:.3g})")


def uniform_away_from(rng, shape, low, high, kinks, margin=0.02):
    """Uniform values in [low, high) moved at least ``margin`` away from every kink.

    Finite differences are meaningless across a kink (ReLU's 0, ReLU6's 6).
    """
    x = rng.uniform(low, high, size=shape)
    for kink in kinks:
        near = np.abs(x - kink) < margin
        x[near] = kink + np.where(x[near] >= kink, margin, -margin) * 2
    return x


def distinct_values(rng, shape, spacing=1e-3):
    """A random permutation of well-separated values: no ties, no near-ties (for max pooling)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * spacing - n * spacing / 2).reshape(shape) + 0.0


def write_tiny_mnist(root):
    """128 training and 64 test images of MNIST's shape: class k lights up row block k."""
    from robustcnn.models.idx import write_idx

    rng = np.random.default_rng(0)
    for split, n in (("train", 128), ("t10k", 64)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4:2 * k + 7, 4:24] = 255
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root
