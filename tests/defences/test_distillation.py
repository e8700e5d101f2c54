"""defences/distillation.py: the temperature loss against its definition and finite
differences; defensive distillation on a small task makes the deployed logits about T times
larger (the saturation the sanity checks report) without changing the predictions much."""

import numpy as np
import pytest
from helpers import assert_close, check_gradients

from robustcnn.attacks import fgsm
from robustcnn.attacks.sanity import check_gradients as sanity_gradients
from robustcnn.compress.distill import distillation_loss
from robustcnn.defences.distillation import (TemperatureObjective, defensive_distillation,
                                             temperature_loss)
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU
from robustcnn.engine.train import Schedule, fit


def test_temperature_loss_by_definition(rng):
    z = rng.normal(0, 5, (6, 4))
    y = rng.integers(0, 4, 6)
    T = 7.0
    loss, grad = temperature_loss(z, y, T)
    p = np.exp(z / T) / np.exp(z / T).sum(axis=1, keepdims=True)
    assert_close(loss, -T * np.log(p[np.arange(6), y]), 1e-12, "loss")
    check_gradients(lambda z: temperature_loss(z, y, T)[0], [z], np.ones(6), [grad], what="T loss")
    # soft targets: T · CE(q, softmax(z/T)), the gradient T/T² of Hinton et al.'s soft term
    q = rng.dirichlet(np.ones(4), size=6)
    loss, grad = temperature_loss(z, q, T)
    assert_close(loss, -T * (q * np.log(p)).sum(axis=1), 1e-12, "soft loss")
    check_gradients(lambda z: temperature_loss(z, q, T)[0], [z], np.ones(6), [grad],
                    what="soft T loss")
    teacher_logits = T * np.log(q)
    assert_close(distillation_loss(z, teacher_logits, y, T, 1.0)[1], T * grad, 1e-9, "vs Hinton")


def test_objective_fills_grads_like_the_loss(rng):
    net = Net([Linear("ip", 3)], (4,), dtype=np.float64)
    x, y = rng.random((5, 4)), rng.integers(0, 3, 5)
    loss, logits = TemperatureObjective(20.0)(net, x, y)
    want, dz = temperature_loss(logits, y, 20.0)
    assert loss == pytest.approx(want.mean())
    assert_close(net.layer("ip").grads["weight"], dz.T @ x / 5, 1e-12, "dW")
    teacher = Net([Linear("ip", 3)], (4,), dtype=np.float64, seed=5)
    loss, logits = TemperatureObjective(20.0, teacher)(net, x, y)
    q = np.exp(teacher.logits(x) / 20) / np.exp(teacher.logits(x) / 20).sum(1, keepdims=True)
    assert loss == pytest.approx(temperature_loss(logits, q, 20.0)[0].mean())
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        TemperatureObjective(0)


def stripes(n, seed):
    """Three classes of 8×8 images: a bright row, column or diagonal, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 1, 8, 8)) * 0.3
    for i, label in enumerate(y):
        if label == 0:
            x[i, 0, 3] += 0.7
        elif label == 1:
            x[i, 0, :, 3] += 0.7
        else:
            x[i, 0, np.arange(8), np.arange(8)] += 0.7
    return np.clip(x, 0, 1).astype(np.float32), y


def small_cnn(seed):
    return Net([Conv2d("c1", 4, kernel=3), MaxPool2d("p1", 2, 2), Linear("ip1", 16),
                ReLU("r1"), Linear("ip2", 3)], (1, 8, 8), seed=seed)


def test_defensive_distillation_scales_the_logits_and_saturates():
    x, y = stripes(600, 0)
    xt, yt = stripes(200, 1)
    plain = small_cnn(0)
    fit(plain, x, y, epochs=4, batch_size=32, schedule=Schedule("cosine", 0.02, total=4 * 18),
        progress=False, log=None)
    teacher, student = small_cnn(0), small_cnn(1)
    defensive_distillation(teacher, student, x, y, temperature=100.0, epochs=4, batch_size=32,
                           lr=0.05)
    assert plain.accuracy(xt, yt) > 0.95 and student.accuracy(xt, yt) > 0.95
    scale = np.abs(student.logits(xt)).mean() / np.abs(plain.logits(xt)).mean()
    assert scale > 10
    assert sanity_gradients(plain, xt, yt).passed
    check = sanity_gradients(student, xt, yt)
    assert not check.passed and "SOFTMAX SATURATION" in check.detail
    # the masking: FGSM fools the plain net, not the distilled one
    assert plain.accuracy(fgsm(plain, xt, yt, 0.3), yt) < 0.7
    assert student.accuracy(fgsm(student, xt, yt, 0.3), yt) > 0.95
