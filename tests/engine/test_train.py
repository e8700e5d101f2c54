"""Training: the loss falls, checkpoints resume to the same weights, bad checkpoints are refused."""

import numpy as np
import pytest

from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU
from robustcnn.engine.augment import RandomShiftFlip
from robustcnn.engine.checkpoint import load_net, read_checkpoint, save_checkpoint
from robustcnn.engine.train import SGD, Adam, Schedule, fit


def tiny_net(seed=0):
    return Net([Conv2d("conv1", 4, kernel=3), MaxPool2d("pool1", 2), ReLU("relu1"),
                Linear("ip1", 3)], input_shape=(1, 8, 8), seed=seed, name="tiny")


def toy_data(n=96, seed=0):
    """Three classes told apart by where a bright square sits."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.2, size=(n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    for i, label in enumerate(y):
        x[i, 0, 1:4, 1 + 2 * label:4 + 2 * label] += 0.8
    return x, y


def test_loss_falls_on_a_small_batch():
    net = tiny_net()
    x, y = toy_data(32)
    net.train()
    first, _ = net.loss_and_grad(x, y)
    opt = SGD(momentum=0.9, weight_decay=0.0)
    for _ in range(30):
        loss, _ = net.loss_and_grad(x, y)
        opt.step(net, 0.05)
    assert loss < 0.5 * first
    assert net.eval().accuracy(x, y) > 0.9


def test_schedules():
    cos = Schedule("cosine", 0.1, total=100)
    assert cos(0) == pytest.approx(0.1)
    assert cos(50) == pytest.approx(0.05)
    assert cos(100) == pytest.approx(0.0, abs=1e-12)
    step = Schedule("step", 0.1, step_size=10, gamma=0.5)
    assert [step(i) for i in (0, 9, 10, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    warm = Schedule("constant", 0.2, warmup=4)
    assert [warm(i) for i in range(5)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2])
    with pytest.raises(ValueError, match="unknown kind"):
        Schedule("linear", 0.1)
    with pytest.raises(ValueError, match="base_lr"):
        Schedule("cosine", -1.0)


def test_sgd_step_matches_caffe_update():
    net = tiny_net()
    w = net.params["ip1"]["weight"]
    b = net.params["ip1"]["bias"]
    w0, b0 = w.copy(), b.copy()
    x, y = toy_data(8)
    net.loss_and_grad(x, y)
    g, gb = net.grads["ip1"]["weight"].copy(), net.grads["ip1"]["bias"].copy()
    opt = SGD(momentum=0.9, weight_decay=0.01)
    opt.step(net, 0.1)
    # v = μ·0 + lr·(g + λw);  w ← w − v  (no decay on the bias)
    np.testing.assert_allclose(w, w0 - 0.1 * (g + 0.01 * w0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b, b0 - 0.1 * gb, rtol=1e-6, atol=1e-7)



@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_steps_match_torch(weight_decay):
    torch = pytest.importorskip("torch")
    net = Net([Linear("ip1", 5), ReLU("relu1"), Linear("ip2", 3)], input_shape=(7,), seed=0,
              dtype=np.float64, name="tiny-mlp")
    x, y = np.random.default_rng(1).standard_normal((16, 7)), np.arange(16) % 3
    opt = Adam(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=weight_decay)
    names = [(layer.name, k) for layer in net.layers for k in layer.params]
    ref = {key: torch.tensor(net.params[key[0]][key[1]].copy(), requires_grad=True)
           for key in names}
    # torch.optim.Adam's weight_decay is the L2 term added to the gradient, as ours; ours skips
    # the bias (Caffe's decay multipliers), so the biases get a second torch optimizer.
    groups = [{"params": [ref[k]], "weight_decay": weight_decay if k[1] == "weight" else 0.0}
              for k in names]
    peer = torch.optim.Adam(groups, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    for step in range(4):
        net.loss_and_grad(x, y)
        for key in names:
            ref[key].grad = torch.tensor(net.grads[key[0]][key[1]].copy())
        opt.step(net, 0.01)
        peer.step()
        for key in names:
            np.testing.assert_allclose(net.params[key[0]][key[1]], ref[key].detach().numpy(),
                                       rtol=1e-10, atol=1e-12, err_msg=f"step {step} {key}")
    assert opt.config()["optimizer"] == "adam"


@pytest.mark.parametrize("kw, match", [(dict(beta1=1.0), "beta1 and beta2"),
                                       (dict(eps=0.0), "eps must be"),
                                       (dict(weight_decay=-1.0), "weight_decay must be")])
def test_adam_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        Adam(**kw)


def _train(path, epochs, seed=0):
    net = tiny_net()
    x, y = toy_data()
    fit(net, x, y, epochs=epochs, batch_size=16, optimizer=SGD(0.9, 1e-4),
        schedule=Schedule("cosine", 0.05, total=3 * 6), seed=seed, augment=RandomShiftFlip(1),
        checkpoint=path, progress=False, log=None)
    return net


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = _train(tmp_path / "straight.h5", epochs=3)
    # A run killed during epoch 3; the next run finds the checkpoint of epoch 2 and resumes.
    interrupted = tmp_path / "resumed.h5"
    net = tiny_net()
    x, y = toy_data()
    kwargs = dict(batch_size=16, optimizer=SGD(0.9, 1e-4), schedule=Schedule("cosine", 0.05, total=18),
                  seed=0, augment=RandomShiftFlip(1), checkpoint=interrupted, progress=False, log=None)
    with pytest.raises(KeyboardInterrupt):
        fit(net, x, y, epochs=3, **dict(kwargs, augment=_InterruptAfter(RandomShiftFlip(1), 2 * 6 + 1)))
    assert read_checkpoint(interrupted)["meta"]["epoch"] == 2
    resumed = tiny_net(seed=123)  # different initial weights: all must come from the checkpoint
    history = fit(resumed, x, y, epochs=3, **kwargs)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for (key, a), (_, b) in zip(sorted(straight.state_dict().items()),
                                sorted(resumed.state_dict().items())):
        # Determinism check: the same run, so the same bits.
        np.testing.assert_array_equal(a, b, err_msg=key)


class _InterruptAfter:
    """An augmentation that raises KeyboardInterrupt on its n-th call (a kill mid-epoch)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0

    def __call__(self, x, rng):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.inner(x, rng)

    def __repr__(self):
        return repr(self.inner)


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    path = tmp_path / "run.h5"
    _train(path, epochs=1)
    with pytest.raises(ValueError, match="other settings.*seed"):
        _train(path, epochs=1, seed=1)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    net = tiny_net(seed=3)
    path = tmp_path / "model.h5"
    save_checkpoint(path, net, meta={"note": "x"})
    loaded, meta = load_net(path)
    assert meta == {"note": "x"}
    x, _ = toy_data(4)
    np.testing.assert_allclose(loaded.forward(x), net.forward(x), rtol=0, atol=0)

    data = bytearray(path.read_bytes())
    # Truncated file.
    (tmp_path / "truncated.h5").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="truncated.h5"):
        load_net(tmp_path / "truncated.h5")
    # Flipped bytes inside the weights: found by the checksum (or by HDF5 itself).
    w = net.params["ip1"]["weight"]
    needle = w.tobytes()[:16]
    at = bytes(data).find(needle)
    assert at > 0
    data[at + 3] ^= 0xFF
    (tmp_path / "tampered.h5").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="tampered.h5"):
        load_net(tmp_path / "tampered.h5")
    # Not a checkpoint at all.
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="text.h5"):
        load_net(tmp_path / "text.h5")


def test_checkpoint_version_mismatch(tmp_path):
    import h5py

    path = tmp_path / "model.h5"
    save_checkpoint(path, tiny_net())
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        load_net(path)


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    from robustcnn.atomic import atomic_path

    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_augment_is_seeded_and_shape_preserving():
    x, _ = toy_data(10)
    aug = RandomShiftFlip(2)
    a = aug(x, np.random.default_rng(1))
    b = aug(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)  # same seed, same batch (determinism check)
    assert not np.allclose(a, x)
    # pad 0 without flips is the identity
    np.testing.assert_array_equal(RandomShiftFlip(0, flip=False)(x, np.random.default_rng(0)), x)
    # a pure flip mirrors the columns
    flipped = RandomShiftFlip(0, flip=True)
    rng = np.random.default_rng(5)
    out = flipped(x, rng)
    rng = np.random.default_rng(5)
    rng.integers(0, 1, size=10), rng.integers(0, 1, size=10)
    mask = rng.random(10) < 0.5
    np.testing.assert_array_equal(out[mask], x[mask][..., ::-1])
    np.testing.assert_array_equal(out[~mask], x[~mask])


class _TaggedObjective:
    """Plain cross-entropy under a name: an objective with a ``config()``."""

    def __init__(self, tag):
        self.tag, self.modes = tag, []

    def __call__(self, net, xb, yb):
        self.modes.append(net.training)
        return net.loss_and_grad(xb, yb)

    def config(self):
        return {"objective": "tagged", "tag": self.tag}


def _fit_with(objective, path=None, epochs=2):
    net = tiny_net()
    x, y = toy_data()
    history = fit(net, x, y, epochs=epochs, batch_size=16, optimizer=SGD(0.9, 1e-4),
                  schedule=Schedule("cosine", 0.05, total=12), checkpoint=path, progress=False,
                  log=None, objective=objective)
    return net, history


def test_an_objective_is_called_in_train_mode_and_replaces_the_loss():
    plain, plain_history = _fit_with(None)
    objective = _TaggedObjective("a")
    net, history = _fit_with(objective)
    assert len(objective.modes) == 2 * 6 and all(objective.modes)
    assert not net.training
    for (key, a), (_, b) in zip(sorted(plain.state_dict().items()),
                                sorted(net.state_dict().items())):
        # Determinism check: the same loss through another path, so the same bits.
        np.testing.assert_array_equal(a, b, err_msg=key)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in plain_history]

    def halved(net, xb, yb):  # another loss: half the cross-entropy, half its gradients
        loss, logits = net.loss_and_grad(xb, yb)
        for grads in net.grads.values():
            for g in grads.values():
                g *= 0.5
        return 0.5 * loss, logits

    net, history = _fit_with(halved)
    assert history[0]["train_loss"] == pytest.approx(0.5 * plain_history[0]["train_loss"],
                                                     rel=0.2)
    assert not np.allclose(net.params["ip1"]["weight"], plain.params["ip1"]["weight"])


def test_the_objective_config_is_in_the_checkpoint_and_another_objective_is_refused(tmp_path):
    path = tmp_path / "run.h5"
    _fit_with(_TaggedObjective("a"), path)
    assert read_checkpoint(path)["meta"]["run"]["objective"] == {"objective": "tagged", "tag": "a"}
    with pytest.raises(ValueError, match=r"other settings \(differs in \['objective'\]\)"):
        _fit_with(_TaggedObjective("b"), path)
    with pytest.raises(ValueError, match=r"differs in \['objective'\]"):
        _fit_with(None, path)
    again = _TaggedObjective("a")
    _, history = _fit_with(again, path)  # the same objective resumes (here: all done)
    assert [h["epoch"] for h in history] == [1, 2] and again.modes == []
    plain = tmp_path / "plain.h5"
    _fit_with(None, plain)
    assert "objective" not in read_checkpoint(plain)["meta"]["run"]  # as before objectives
    with pytest.raises(ValueError, match=r"differs in \['objective'\]"):
        _fit_with(_TaggedObjective("a"), plain)
    with pytest.raises(ValueError, match="objective must be callable"):
        _fit_with("cross-entropy")
