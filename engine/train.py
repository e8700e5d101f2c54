"""Training: SGD with momentum and weight decay, learning-rate schedules, seeded shuffling,
a progress bar, and atomic checkpoints that a run resumes from.

Determinism: the shuffling, the augmentation and the dropout masks of epoch e are drawn from
generators seeded with (seed, e), and every kernel splits its work the same way for a given
thread count. So a run resumed from the checkpoint of epoch e ends with the same weights as the
uninterrupted run (with the same thread count).
"""

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit, prange

from ..progress import progress_bar
from ._jit import JIT_PARALLEL
from .checkpoint import read_checkpoint, save_checkpoint


@njit(**JIT_PARALLEL)
def sgd_momentum_step_flat(w, g, v, lr, momentum, decay):
    # w, g, v: (M,).  Caffe's SGD: v ← μ·v + lr·(g + λ·w);  w ← w − v
    for i in prange(w.shape[0]):
        v[i] = momentum * v[i] + lr * (g[i] + decay * w[i])
        w[i] -= v[i]


@dataclass
class SGD:
    """SGD with momentum and L2 weight decay, as Caffe's solver. Decay applies to each layer's
    ``decay`` parameters: weights (dense or CSR values), not biases or codebook centroids."""

    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self):
        if not 0 <= self.momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {self.momentum}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"SGD: weight_decay must be finite and >= 0, got {self.weight_decay}")
        self.velocity = {}

    def step(self, net, lr):
        """Update every parameter of ``net`` from ``net.grads`` with learning rate ``lr``."""
        for layer in net.layers:
            for name, w in layer.params.items():
                g = layer.grads.get(name)
                if g is None:
                    continue
                key = f"{layer.name}/{name}"
                v = self.velocity.get(key)
                if v is None or v.shape != w.shape or v.dtype != w.dtype:  # new or re-encoded
                    v = self.velocity[key] = np.zeros_like(w)
                decay = self.weight_decay if name in layer.decay else 0.0
                sgd_momentum_step_flat(w.reshape(-1), np.ascontiguousarray(g).reshape(-1),
                                       v.reshape(-1), lr, self.momentum, decay)

    def config(self):
        return {"optimizer": "sgd", "momentum": self.momentum, "weight_decay": self.weight_decay}


@njit(**JIT_PARALLEL)
def adam_step_flat(w, g, m, v, lr, beta1, beta2, eps, decay, correction1, correction2):
    # w, g, m, v: (M,).  g' = g + λ·w;  m ← β1·m + (1 − β1)·g';  v ← β2·v + (1 − β2)·g'²;
    # w ← w − lr · (m / c1) / (√(v / c2) + ε), c_i = 1 − β_i^t (Kingma & Ba 2015, Algorithm 1)
    for i in prange(w.shape[0]):
        gi = g[i] + decay * w[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * gi
        v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi
        w[i] -= lr * (m[i] / correction1) / (np.sqrt(v[i] / correction2) + eps)


@dataclass
class Adam:
    """Adam (Kingma & Ba, ICLR 2015) with L2 weight decay added to the gradient of each layer's
    ``decay`` parameters, as ``SGD``. Its per-parameter step sizes suit parameters of very
    different gradient scales (a quantized layer's two scales beside its latent weights)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self):
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"Adam: beta1 and beta2 must be in [0, 1), got {self.beta1}, "
                             f"{self.beta2}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise ValueError(f"Adam: eps must be finite and > 0, got {self.eps}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"Adam: weight_decay must be finite and >= 0, got {self.weight_decay}")
        self.velocity = {}  # "layer/param" → (2, …) moments [m, v]; "adam/step" → steps taken

    def step(self, net, lr):
        """Update every parameter of ``net`` from ``net.grads`` with learning rate ``lr``."""
        t = int(self.velocity.get("adam/step", np.zeros(1))[0]) + 1
        self.velocity["adam/step"] = np.array([t], dtype=np.float64)
        c1, c2 = 1.0 - self.beta1 ** t, 1.0 - self.beta2 ** t
        for layer in net.layers:
            for name, w in layer.params.items():
                g = layer.grads.get(name)
                if g is None:
                    continue
                key = f"{layer.name}/{name}"
                moments = self.velocity.get(key)
                if moments is None or moments.shape[1:] != w.shape or moments.dtype != w.dtype:
                    moments = self.velocity[key] = np.zeros((2,) + w.shape, dtype=w.dtype)
                decay = self.weight_decay if name in layer.decay else 0.0
                adam_step_flat(w.reshape(-1), np.ascontiguousarray(g).reshape(-1),
                               moments[0].reshape(-1), moments[1].reshape(-1), lr, self.beta1,
                               self.beta2, self.eps, decay, c1, c2)

    def config(self):
        return {"optimizer": "adam", "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}


@dataclass
class Schedule:
    """Learning rate by iteration: ``constant``, ``step`` (× gamma every ``step_size``
    iterations) or ``cosine`` (from base_lr to final_lr over ``total`` iterations), each after an
    optional linear warm-up."""

    kind: str = "cosine"
    base_lr: float = 0.01
    total: int = 1
    step_size: int = 1
    gamma: float = 0.1
    final_lr: float = 0.0
    warmup: int = 0

    def __post_init__(self):
        if self.kind not in ("constant", "step", "cosine"):
            raise ValueError(f"schedule: unknown kind {self.kind!r}; use constant, step or cosine")
        if not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ValueError(f"schedule: base_lr must be finite and > 0, got {self.base_lr}")
        if self.total < 1 or self.step_size < 1 or self.warmup < 0:
            raise ValueError("schedule: total and step_size must be >= 1 and warmup >= 0")

    def __call__(self, it):
        if it < self.warmup:
            return self.base_lr * (it + 1) / self.warmup
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            return self.base_lr * self.gamma ** (it // self.step_size)
        t = min(max(it - self.warmup, 0) / max(self.total - self.warmup, 1), 1.0)
        return self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (1 + math.cos(math.pi * t))


def fit(net, x, y, *, epochs, batch_size=64, optimizer=None, schedule=None, seed=0,
        augment=None, val=None, checkpoint=None, progress=True, log=print, objective=None,
        extend=False):
    """Train ``net`` on images ``x`` (N, …) with integer labels ``y`` → history (list of dicts).

    Each epoch visits a fresh seeded permutation in batches of ``batch_size`` (the last partial
    batch is dropped). ``augment(batch, rng)`` returns an augmented copy of a batch. ``val`` is
    an (x, y) pair evaluated after every epoch. With ``checkpoint`` (a path), the state is saved
    atomically after every epoch and a run that finds the file resumes from it; the file must
    come from the same settings (model, data size, seed, batch size, schedule, optimizer,
    objective). With ``extend``, a checkpoint of a finished run that differs only in its
    epochs (and its schedule, which counts them) goes on to the larger ``epochs``: the
    finished epochs stay as they were and the new epochs follow this call's schedule from the
    iteration reached (so the result differs from a run of that many epochs from the start).

    ``objective(net, xb, yb)`` → (mean loss, logits) computes the training loss of a batch and
    leaves its parameter gradients in ``net.grads``, as ``net.loss_and_grad`` (the default, when
    None) does; it is called in train mode. Its ``config()`` (a JSON-ready dict) goes into the
    checkpoint's settings, so a checkpoint of another objective is refused. Examples:
    ``attacks.adversarial_training.AdversarialObjective`` and
    ``compress.distill.DistillationObjective``. The training accuracy is measured on the
    logits the objective returns (for adversarial training: on the mixed batch). An objective
    with a schedule (``certify.objective.IBPObjective``'s eps ramp) may define
    ``at_iteration(it, total)``: fit calls it before each batch with the iteration (from 0,
    counted over the whole run, so a resumed run continues the schedule) and the run's total.
    """
    optimizer = optimizer or SGD()
    steps_per_epoch = len(x) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"fit: {len(x)} examples make no batch of {batch_size}")
    if len(y) != len(x):
        raise ValueError(f"fit: {len(x)} examples but {len(y)} labels")
    schedule = schedule or Schedule("cosine", 0.01, total=epochs * steps_per_epoch)
    run = {"seed": seed, "batch_size": batch_size, "epochs": epochs, "examples": len(x),
           "schedule": asdict(schedule), "optimizer": optimizer.config(),
           "augment": repr(augment) if augment else None, "spec": net.spec()}
    if objective is not None:  # (absent for the default, so older checkpoints still resume)
        run["objective"] = _objective_config(objective)
    run = json.loads(json.dumps(run))  # compare with a checkpoint's copy as JSON sees it
    history, start_epoch = [], 0
    if checkpoint is not None and os.path.exists(checkpoint):
        ckpt = read_checkpoint(checkpoint)
        saved_run = ckpt["meta"].get("run")
        if saved_run != run:
            changed = sorted(k for k in set(run) | set(saved_run or {})
                             if (saved_run or {}).get(k) != run.get(k))
            longer = (set(changed) <= {"epochs", "schedule"} and saved_run is not None
                      and ckpt["meta"].get("epoch") == saved_run.get("epochs")
                      and epochs > saved_run.get("epochs", epochs))
            if not (extend and longer):
                hint = (f"; it finished its {saved_run['epochs']} epochs: extend=True (train "
                        f"--extend) continues it to {epochs}") if longer else \
                    "; remove it or choose another path"
                raise ValueError(f"{checkpoint}: was written by a run with other settings "
                                 f"(differs in {changed}){hint}")
            if log:
                log(f"extending {checkpoint} from {saved_run['epochs']} to {epochs} epochs")
        history, start_epoch = ckpt["meta"].get("history"), ckpt["meta"].get("epoch")
        if not isinstance(history, list) or isinstance(start_epoch, bool) \
                or not isinstance(start_epoch, int) or not 0 <= start_epoch <= epochs:
            raise ValueError(f"{checkpoint}: its epoch ({start_epoch!r}) or history is not one "
                             f"of a run of {epochs} epochs")
        try:
            net.load_state_dict(ckpt["state"], source=os.fspath(checkpoint))
        except TypeError as e:  # arrays of the wrong kind
            raise ValueError(f"{checkpoint}: {e}") from None
        optimizer.velocity = {k: np.array(v) for k, v in ckpt["velocity"].items()}
        if log and start_epoch:
            log(f"resuming {checkpoint} after epoch {start_epoch}")
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(len(x))
        augment_rng = np.random.default_rng([seed, epoch, 1])
        net.seed_dropout([seed, epoch, 2])
        net.train()
        total_loss = total_correct = seen = 0
        bar = progress_bar(range(steps_per_epoch), enabled=progress,
                           desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for b in bar:
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb, augment_rng)
            lr = schedule(epoch * steps_per_epoch + b)
            if hasattr(objective, "at_iteration"):
                objective.at_iteration(epoch * steps_per_epoch + b, epochs * steps_per_epoch)
            if objective is None:
                loss, logits = net.loss_and_grad(xb, yb)
            else:
                loss, logits = objective(net, xb, yb)
            optimizer.step(net, lr)
            total_loss += loss * len(idx)
            total_correct += int((logits.reshape(len(idx), net.num_classes).argmax(1) == yb).sum())
            seen += len(idx)
            if b % 20 == 0:
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{total_correct / seen:.4f}",
                                lr=f"{lr:.4g}")
        bar.close()
        net.eval()
        record = {"epoch": epoch + 1, "train_loss": total_loss / seen,
                  "train_accuracy": total_correct / seen, "lr": lr,
                  "seconds": time.perf_counter() - t0}
        if val is not None:
            record["val_accuracy"] = net.accuracy(*val)
        history.append(record)
        if log:
            log(_epoch_line(record))
        if checkpoint is not None:
            save_checkpoint(checkpoint, net, velocity=optimizer.velocity,
                            meta={"run": run, "epoch": epoch + 1, "history": history})
    net.eval()
    return history


def _objective_config(objective):
    """The objective's ``config()``, or for a plain function its qualified name."""
    if not callable(objective):
        raise ValueError(f"fit: objective must be callable(net, xb, yb), got {objective!r}")
    config = getattr(objective, "config", None)
    if config is None:
        return {"callable": f"{getattr(objective, '__module__', '?')}."
                            f"{getattr(objective, '__qualname__', repr(objective))}"}
    return config()


def _epoch_line(r):
    line = (f"epoch {r['epoch']:3d}  loss {r['train_loss']:.4f}  train acc "
            f"{100 * r['train_accuracy']:.2f}%  lr {r['lr']:.4g}  {r['seconds']:.1f}s")
    if "val_accuracy" in r:
        line += f"  val acc {100 * r['val_accuracy']:.2f}%"
    return line
