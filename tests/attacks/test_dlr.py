"""The DLR losses against their definitions in plain NumPy, and their logit gradients against
central finite differences (float64)."""

import numpy as np
import pytest

from robustcnn.attacks.dlr import dlr, dlr_targeted


def reference_dlr(z, y):
    """Croce & Hein 2020, eq. 6, one row at a time."""
    out = []
    for row, label in zip(z, y):
        s = np.sort(row)[::-1]
        other = max(v for k, v in enumerate(row) if k != label)
        out.append(-(row[label] - other) / (s[0] - s[2] + 1e-12))
    return np.array(out)


def reference_dlr_targeted(z, y, t):
    out = []
    for row, label, target in zip(z, y, t):
        s = np.sort(row)[::-1]
        den = s[0] - 0.5 * (s[2] + s[3]) if len(row) >= 4 else s[0] - s[2]
        out.append(-(row[label] - row[target]) / (den + 1e-12))
    return np.array(out)


def finite_differences(f, z, h=1e-6):
    grad = np.zeros_like(z)
    for k in range(z.shape[1]):
        e = np.zeros_like(z)
        e[:, k] = h
        grad[:, k] = (f(z + e) - f(z - e)) / (2 * h)
    return grad


@pytest.mark.parametrize("classes", [3, 4, 10])
def test_dlr_value_and_gradient(classes, rng):
    z = rng.normal(0, 3, (50, classes))
    y = rng.integers(0, classes, 50)
    loss, grad = dlr(z, y)
    np.testing.assert_allclose(loss, reference_dlr(z, y), rtol=1e-12, atol=1e-12)
    fd = finite_differences(lambda v: reference_dlr(v, y), z)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-6 * np.abs(fd).max())
    assert loss.dtype == grad.dtype == np.float64


@pytest.mark.parametrize("classes", [3, 4, 10])
def test_dlr_targeted_value_and_gradient(classes, rng):
    z = rng.normal(0, 3, (50, classes))
    y = rng.integers(0, classes, 50)
    t = (y + rng.integers(1, classes, 50)) % classes
    loss, grad = dlr_targeted(z, y, t)
    np.testing.assert_allclose(loss, reference_dlr_targeted(z, y, t), rtol=1e-12, atol=1e-12)
    fd = finite_differences(lambda v: reference_dlr_targeted(v, y, t), z)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-6 * np.abs(fd).max())


def test_dlr_is_shift_and_scale_invariant_and_signs_success(rng):
    z = rng.normal(0, 2, (40, 10))
    y = rng.integers(0, 10, 40)
    t = (y + 1) % 10
    for f, args in ((dlr, (y,)), (dlr_targeted, (y, t))):
        base = f(z, *args)[0]
        np.testing.assert_allclose(f(3.0 * z + 7.0, *args)[0], base, rtol=1e-9, atol=1e-9)
    # DLR > 0 exactly where y no longer wins; targeted DLR > 0 where t beats y.
    loss = dlr(z, y)[0]
    np.testing.assert_array_equal(loss > 0, z.argmax(axis=1) != y)
    loss_t = dlr_targeted(z, y, t)[0]
    np.testing.assert_array_equal(loss_t > 0, z[np.arange(40), t] > z[np.arange(40), y])


def test_dlr_needs_three_classes():
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr(np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_targeted(np.zeros((2, 2)), [0, 1], [1, 0])
