"""Defensive distillation: a teacher and a student trained with their softmax at temperature T,
the student deployed at T = 1.

Papernot, McDaniel, Wu, Jha & Swami, "Distillation as a Defense to Adversarial Perturbations
against Deep Neural Networks", IEEE S&P 2016: train the teacher on the labels with
softmax(z/T); train a student of the same architecture on the teacher's probabilities
softmax(t/T) with its own softmax(z/T); deploy the student at T = 1, i.e. its logits z as they
are. At T = 100 (their MNIST choice) the student's logits come out about T times larger than a
normally trained net's: softmax(z) saturates, the cross-entropy's gradient underflows in
float32, and gradient attacks on the loss (FGSM, the paper's JSMA on probabilities) fail.
Carlini & Wagner, "Defensive Distillation is Not Robust to Adversarial Examples" (2016) and
"Towards Evaluating the Robustness of Neural Networks" (S&P 2017): attacks on the logits (their
L2 attack) succeed on it as on the undefended net. The robustness is gradient masking, which
``attacks.sanity``'s ``softmax_saturation`` check reports.

The loss here is T · CE(target, softmax(z/T)), Papernot et al.'s loss times T (target: the
one-hot label for the teacher, the teacher's softmax(t/T) for the student): its gradient
softmax(z/T) − target has the size of plain training's at every T, so SGD at the usual learning
rates trains it from the usual initialisation (Papernot et al.'s unscaled loss has gradients
T times smaller; Hinton et al.'s T² scaling, which ``compress.distill`` uses for its students,
T times larger, which diverges from a fresh initialisation at T = 100).
"""

import math

import numpy as np

from ..compress.distill import DistillationObjective, _log_softmax
from ..engine.train import SGD, Schedule, fit


def temperature_loss(logits, targets, temperature):
    """T · CE(targets, softmax(z/T)) per example and its gradient w.r.t. z, in float64 →
    (loss (N,), dloss/dz (N, K) = softmax(z/T) − targets). ``targets``: (N,) labels (one-hot)
    or (N, K) probabilities."""
    z = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if targets.ndim == 1:
        targets = np.eye(z.shape[1])[targets]
    log_p = _log_softmax(z / temperature)
    loss = -temperature * (targets * log_p).sum(axis=1)
    return loss, np.exp(log_p) - targets


class TemperatureObjective:
    """Training at temperature T as an objective for ``fit``: mean T · CE(target,
    softmax(z/T)), gradients in ``net.grads``. Without ``teacher`` the targets are the labels
    (the defensive-distillation teacher); with one, its probabilities softmax(t/T) at the same
    temperature (the student: Papernot et al.'s soft labels; the labels are not used)."""

    def __init__(self, temperature=100.0, teacher=None):
        try:
            temperature = float(temperature)
        except (TypeError, ValueError):
            temperature = float("nan")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"TemperatureObjective: temperature must be finite and > 0, got "
                             f"{temperature}")
        if teacher is not None and not callable(getattr(teacher, "logits", None)):
            raise ValueError(f"TemperatureObjective: teacher must be a robustcnn Net, got "
                             f"{type(teacher).__name__}")
        self.temperature, self.teacher = temperature, teacher

    def __call__(self, net, xb, yb):
        _, logits = net.forward_for_backward(xb)
        flat = logits.reshape(len(xb), net.num_classes)
        if self.teacher is None:
            targets = np.asarray(yb, dtype=np.int64)
        else:
            targets = np.exp(_log_softmax(np.asarray(self.teacher.logits(xb), np.float64)
                                          / self.temperature))
        loss, dlogits = temperature_loss(flat, targets, self.temperature)
        dlogits /= max(len(loss), 1)
        net.backward(dlogits.astype(net.dtype).reshape(logits.shape), param_grads=True,
                     input_grad=False, of="logits")
        return float(loss.mean()) if len(loss) else 0.0, logits

    def config(self):
        cfg = {"objective": "temperature", "temperature": self.temperature}
        if self.teacher is not None:  # the teacher's identity, as DistillationObjective records
            cfg["teacher"] = DistillationObjective(self.teacher, self.temperature,
                                                   1.0).config()["teacher_weights_sha256"]
        return cfg

    def __repr__(self):
        return f"TemperatureObjective(temperature={self.temperature})"


def defensive_distillation(teacher, student, x, y, *, temperature=100.0, epochs=5,
                           student_epochs=None, batch_size=64, lr=0.01, momentum=0.9,
                           weight_decay=5e-4, seed=0, val=None, checkpoints=(None, None),
                           progress=False, log=None):
    """Papernot et al.'s procedure in place: train ``teacher`` at ``temperature`` on (x, y),
    then ``student`` (a fresh net, usually the same architecture) on the teacher's
    probabilities at the same temperature (``TemperatureObjective`` with the teacher: soft
    labels only). Both with SGD and a cosine schedule from ``lr``. The student is the deployed
    model: its logits as they are (T = 1). → (teacher history, student history).

    ``checkpoints``: (teacher, student) checkpoint paths for ``fit`` (resumable), or None."""
    steps = len(x) // batch_size
    if steps < 1:
        raise ValueError(f"defensive_distillation: {len(x)} examples make no batch of "
                         f"{batch_size}")

    def train(net, objective, n_epochs, checkpoint):
        return fit(net, x, y, epochs=n_epochs, batch_size=batch_size,
                   optimizer=SGD(momentum, weight_decay),
                   schedule=Schedule("cosine", lr, total=n_epochs * steps), seed=seed, val=val,
                   checkpoint=checkpoint, progress=progress, log=log, objective=objective)

    first = train(teacher, TemperatureObjective(temperature), epochs, checkpoints[0])
    second = train(student, TemperatureObjective(temperature, teacher),
                   student_epochs or epochs, checkpoints[1])
    return first, second


__all__ = ["TemperatureObjective", "temperature_loss", "defensive_distillation"]
