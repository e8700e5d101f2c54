"""Distillation: the loss's gradients against finite differences, α = 0 is plain cross-entropy,
and a short distillation moves a student's predictions to its teacher's."""

import json

import numpy as np
import pytest
from helpers import assert_close, check_gradients, single_thread

from robustcnn.compress.distill import DistillationObjective, distill, distillation_loss
from robustcnn.engine import Conv2d, Linear, Net, ReLU
from robustcnn.engine.train import read_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def tiny_net(seed=0, dtype=np.float64, classes=3):
    """conv 2 (3×3) → ReLU → ip ``classes`` on (1, 5, 5) inputs."""
    return Net([Conv2d("conv1", 2, kernel=3), ReLU("relu1"), Linear("ip1", classes)],
               input_shape=(1, 5, 5), dtype=dtype, seed=seed, name=f"tiny{seed}")


def data(n, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 1, 5, 5)), rng.integers(0, classes, n)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 1.0), (3.0, 0.0)])
def test_loss_gradient_wrt_logits_matches_finite_differences(temperature, alpha):
    rng = np.random.default_rng(1)
    z, t = rng.normal(0, 2, (5, 4)), rng.normal(0, 3, (5, 4))
    y = rng.integers(0, 4, 5)
    loss, dz = distillation_loss(z, t, y, temperature, alpha)
    assert loss.shape == (5,) and dz.shape == (5, 4)
    dy = rng.normal(size=5)
    check_gradients(lambda z: distillation_loss(z, t, y, temperature, alpha)[0], [z], dy,
                    [dz * dy[:, None]], samples=20, rtol=1e-7, what="distillation_loss")
    # The soft term vanishes when the student copies the teacher: only CE is left.
    same, _ = distillation_loss(t, t, y, temperature, alpha)
    ce, _ = distillation_loss(t, t, y, temperature, 0.0)
    assert_close(same, (1 - alpha) * ce, 1e-12, "loss at z = t")


def test_loss_gradient_wrt_parameters_matches_finite_differences():
    teacher = tiny_net(seed=1)
    net = tiny_net(seed=2).train()
    x, y = data(6)
    objective = DistillationObjective(teacher, temperature=3.0, alpha=0.7)
    loss, logits = objective(net, x, y)
    assert logits.shape == (6, 3)
    analytic = {(layer, key): g.copy() for layer, grads in net.grads.items()
                for key, g in grads.items()}
    assert len(analytic) == 4
    for (layer, key), g in analytic.items():
        w = net.params[layer][key]
        w0 = w.copy()

        def f(v, w=w):
            w[...] = v
            return np.array(objective(net, x, y)[0])

        check_gradients(f, [w0.copy()], np.array(1.0), [g], samples=12, rtol=1e-6,
                        what=f"{layer}/{key}")
        w[...] = w0


def test_alpha_zero_is_plain_cross_entropy():
    teacher = tiny_net(seed=1)
    x, y = data(8)
    plain = tiny_net(seed=2).train()
    loss, _ = plain.loss_and_grad(x, y)
    net = tiny_net(seed=2).train()
    loss_d, _ = DistillationObjective(teacher, temperature=5.0, alpha=0.0)(net, x, y)
    assert loss_d == pytest.approx(loss, rel=1e-12)
    for layer, grads in plain.grads.items():
        for key, g in grads.items():
            assert_close(net.grads[layer][key], g, 1e-12, f"{layer}/{key}")


def kl_to_teacher(student, teacher, x):
    """Mean KL(softmax(teacher) ‖ softmax(student)) at T = 1."""
    loss, _ = distillation_loss(student.logits(x), teacher.logits(x), np.zeros(len(x), int),
                                1.0, 1.0)
    return float(loss.mean())


def test_distillation_moves_the_student_to_the_teacher():
    x, _ = data(256, seed=3)
    x = x.astype(np.float32)
    # Labels unrelated to the teacher: with α = 1 only the teacher can teach, with α = 0 (the
    # control) only the labels.
    y = np.random.default_rng(4).integers(0, 3, len(x))
    teacher = tiny_net(seed=1, dtype=np.float32)
    for w in teacher.params.values():
        w["weight"] *= 3.0  # confident, varied predictions
    xt, _ = data(256, seed=5)
    result = {}
    for alpha in (1.0, 0.0):
        student = tiny_net(seed=2, dtype=np.float32)
        before = kl_to_teacher(student, teacher, xt)
        history = distill(student, teacher, x, y, epochs=20, batch_size=32, lr=0.1,
                          weight_decay=0.0, temperature=2.0, alpha=alpha)
        assert len(history) == 20
        result[alpha] = (kl_to_teacher(student, teacher, xt),
                         (student.predict(xt) == teacher.predict(xt)).mean())
    # Measured: KL 0.47 → 0.011 and agreement 58% → 96% (α = 1); KL 0.66, 24% (α = 0).
    assert result[1.0][0] < 0.1 * before and result[1.0][1] > 0.9
    assert result[0.0][0] > 0.5 * before and result[0.0][1] < 0.6


def test_config_identifies_the_teacher_and_is_json_ready():
    teacher = tiny_net(seed=1)
    config = DistillationObjective(teacher, temperature=4.0, alpha=0.9).config()
    assert json.loads(json.dumps(config)) == config
    assert config["teacher"] == "tiny1" and config["temperature"] == 4.0
    assert config["alpha"] == 0.9
    assert DistillationObjective(tiny_net(seed=1)).config() == config  # same teacher
    other = tiny_net(seed=1)
    other.params["ip1"]["bias"][0] += 1e-3
    assert (DistillationObjective(other).config()["teacher_weights_sha256"]
            != config["teacher_weights_sha256"])
    assert DistillationObjective(teacher, temperature=2.0).config() != config


def test_a_checkpoint_of_another_teacher_is_refused(tmp_path):
    from robustcnn.engine.train import fit

    x, y = data(32)
    path = tmp_path / "student.h5"
    kwargs = dict(epochs=1, batch_size=16, checkpoint=path, progress=False, log=None)
    fit(tiny_net(seed=2), x, y, objective=DistillationObjective(tiny_net(seed=1)), **kwargs)
    assert read_checkpoint(path)["meta"]["run"]["objective"]["objective"] == "distillation"
    with pytest.raises(ValueError, match="objective"):
        fit(tiny_net(seed=2), x, y, objective=DistillationObjective(tiny_net(seed=3)), **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.0), "temperature must be finite and > 0"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(alpha=1.5), r"alpha must be in \[0, 1\]"),
    (dict(alpha="x"), "must be numbers"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationObjective(tiny_net(seed=1), **kwargs)


def test_bad_teacher_and_mismatched_student():
    with pytest.raises(ValueError, match="teacher must be a robustcnn Net"):
        DistillationObjective("teacher.h5")
    x, y = data(4)
    objective = DistillationObjective(tiny_net(seed=1, classes=4))
    with pytest.raises(ValueError, match="does not match teacher tiny1"):
        objective(tiny_net(seed=2), x, y)
    with pytest.raises(ValueError, match="no batch of 64"):
        distill(tiny_net(seed=2), tiny_net(seed=1), x, y, epochs=1, lr=0.1)
