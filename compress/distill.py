"""Knowledge distillation: train a (small or compressed) student on a teacher's softened outputs.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS Deep Learning
Workshop 2015. Per example, with student logits z, teacher logits t, temperature T, weight α:

    L = α · T² · KL(softmax(t/T) ‖ softmax(z/T)) + (1 − α) · CE(softmax(z), y)
    dL/dz = α · T · (softmax(z/T) − softmax(t/T)) + (1 − α) · (softmax(z) − onehot(y))

The T² keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton et
al., section 2). ``DistillationObjective`` is a training objective for ``engine.train.fit``;
``distill`` runs it with SGD and a cosine schedule.
"""

import hashlib
import json
import math

import numpy as np

from ..engine.train import SGD, Schedule, fit


def _log_softmax(z):
    # z: (N, K) float64
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def distillation_loss(logits, teacher_logits, labels, temperature, alpha):
    """Per-example distillation loss and its gradient w.r.t. the student's logits, in float64.

    logits, teacher_logits: (N, K); labels: (N,) ints. → (loss (N,), dloss/dlogits (N, K)),
    the formulas of the module docstring (row n of the gradient is d loss[n] / d logits[n]).
    """
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(teacher_logits, dtype=np.float64)
    rows = np.arange(len(z))
    log_ps = _log_softmax(z / temperature)   # student, softened
    log_pt = _log_softmax(t / temperature)   # teacher, softened
    pt = np.exp(log_pt)
    kl = (pt * (log_pt - log_ps)).sum(axis=1)
    log_p = _log_softmax(z)
    ce = -log_p[rows, labels]
    loss = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    hard = np.exp(log_p)
    hard[rows, labels] -= 1.0
    dlogits = alpha * temperature * (np.exp(log_ps) - pt) + (1 - alpha) * hard
    return loss, dlogits


def _weights_digest(net):
    """SHA-256 of a net's parameters and buffers (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        value = np.ascontiguousarray(value)
        h.update(f"{key}:{value.dtype.str}:{value.shape};".encode())
        h.update(value.view(np.uint8).reshape(-1))
    return h.hexdigest()


class DistillationObjective:
    """Hinton et al.'s distillation loss as a training objective for ``fit`` (see the module).

    Parameters
    ----------
    teacher : the trained ``Net`` whose logits the student learns from; run in eval mode
        (``teacher.logits``) and never changed. It must take the student's input shape and
        have as many classes.
    temperature : T > 0 of the softened softmaxes (Hinton et al. use 1 to 20; higher shows
        more of the teacher's "dark knowledge" about the wrong classes).
    alpha : weight α in [0, 1] of the soft (teacher) term; 1 − α weights the cross-entropy
        with the true labels. α = 0 is plain training.

    Calling it on (net, xb, yb) → (mean loss over the batch, the student's logits), with the
    gradients in ``net.grads``; the student runs in whatever mode ``fit`` set.
    """

    def __init__(self, teacher, temperature=4.0, alpha=0.9):
        name = "DistillationObjective"
        if not callable(getattr(teacher, "logits", None)) or not hasattr(teacher, "spec"):
            raise ValueError(f"{name}: teacher must be a robustcnn Net, got "
                             f"{type(teacher).__name__}")
        try:
            temperature = float(temperature)
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: temperature and alpha must be numbers, got "
                             f"{temperature!r}, {alpha!r}") from None
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"{name}: temperature must be finite and > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"{name}: alpha must be in [0, 1], got {alpha}")
        self.teacher, self.temperature, self.alpha = teacher, temperature, alpha

    def _check_student(self, net):
        t = self.teacher
        if tuple(net.input_shape) != tuple(t.input_shape) or net.num_classes != t.num_classes:
            raise ValueError(
                f"DistillationObjective: student {net.name} (input {tuple(net.input_shape)}, "
                f"{net.num_classes} classes) does not match teacher {t.name} (input "
                f"{tuple(t.input_shape)}, {t.num_classes} classes)")

    def __call__(self, net, xb, yb):
        self._check_student(net)
        teacher_logits = self.teacher.logits(xb)
        _, logits = net.forward_for_backward(xb)
        flat = logits.reshape(len(xb), net.num_classes)
        labels = np.asarray(yb, dtype=np.int64)
        if labels.shape != (len(xb),) or (labels.size and (labels.min() < 0 or
                                                           labels.max() >= net.num_classes)):
            raise ValueError(f"DistillationObjective: need {len(xb)} labels in "
                             f"[0, {net.num_classes}), got shape {labels.shape}")
        loss, dlogits = distillation_loss(flat, teacher_logits, labels, self.temperature,
                                          self.alpha)
        dlogits /= max(len(loss), 1)
        net.backward(dlogits.astype(net.dtype).reshape(logits.shape), param_grads=True,
                     input_grad=False, of="logits")
        return float(loss.mean()) if len(loss) else 0.0, logits

    def config(self):
        """JSON-ready settings: T, α and the teacher (name, architecture and weight digests)."""
        spec = json.dumps(self.teacher.spec(), sort_keys=True).encode()
        return {"objective": "distillation", "temperature": self.temperature,
                "alpha": self.alpha, "teacher": self.teacher.name,
                "teacher_spec_sha256": hashlib.sha256(spec).hexdigest(),
                "teacher_weights_sha256": _weights_digest(self.teacher)}

    def __repr__(self):
        return (f"DistillationObjective(teacher={self.teacher.name!r}, "
                f"temperature={self.temperature}, alpha={self.alpha})")


def distill(student, teacher, x, y, *, epochs, batch_size=64, lr, momentum=0.9,
            weight_decay=5e-4, temperature=4.0, alpha=0.9, seed=0, val=None, progress=False,
            log=None):
    """Train ``student`` in place on (x, y) with ``DistillationObjective(teacher, temperature,
    alpha)``: SGD with momentum and weight decay, learning rate cosine-annealed from ``lr`` to 0
    over the run → ``fit``'s history. ``val`` (x, y) is evaluated after every epoch."""
    steps = len(x) // batch_size
    if steps < 1:
        raise ValueError(f"distill: {len(x)} examples make no batch of {batch_size}")
    return fit(student, x, y, epochs=epochs, batch_size=batch_size,
               optimizer=SGD(momentum, weight_decay),
               schedule=Schedule("cosine", lr, total=epochs * steps), seed=seed, val=val,
               progress=progress, log=log, objective=DistillationObjective(teacher, temperature,
                                                                          alpha))
