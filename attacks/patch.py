"""The adversarial patch: one universal square patch that, pasted anywhere, makes a target class.

Brown, Mané, Roy, Abadi & Gilmer, "Adversarial Patch", NIPS 2017 workshop (arXiv:1712.09665):
train a patch p to maximise E_{x, l}[log P(t | A(p, x, l))] over images x and locations l,
where A pastes p at l (the paper's expectation over transformations also draws rotations and
scales; here only translations are drawn — rotations and scaling are omitted). Each step
averages the input gradient of the target's cross-entropy over a minibatch of images, each
with its own random location, restricted to the patch's window, and takes a signed step
(as BIM does) down the target's loss, keeping the patch inside the valid range.

There is no eps: inside its square a patch replaces the image entirely (L∞ up to the whole
range) and leaves everything else untouched (L0 = patch_size² · channels).
"""

import numpy as np

from ._common import (check_clip, check_clip_pair, check_float, check_inputs, check_int,
                      loss_grad_logits)


def _check_images(x, patch_size, name):
    if x.ndim != 4:
        raise ValueError(f"{name}: needs images (N, C, H, W), got shape {x.shape}")
    if patch_size > min(x.shape[2], x.shape[3]):
        raise ValueError(f"{name}: patch_size {patch_size} does not fit {x.shape[2]}×{x.shape[3]} "
                         f"images")


def random_locations(n, image_hw, patch_size, seed):
    """(n, 2) top-left corners (row, column), uniform over the positions where the patch fits,
    drawn from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    h, w = image_hw
    return np.stack([rng.integers(0, h - patch_size + 1, n),
                     rng.integers(0, w - patch_size + 1, n)], axis=1).astype(np.int64)


def apply_patch(x, patch, locations=None, *, seed=0):
    """Paste ``patch`` (C, s, s) into every image of ``x`` (N, C, H, W) → (x_patched, locations).

    ``locations``: (N, 2) top-left corners (row, column), or None to draw them with
    ``random_locations(N, (H, W), s, seed)``. ``x`` is not modified.
    """
    name = "apply_patch"
    x = np.asarray(x)
    patch = np.asarray(patch)
    if patch.ndim != 3 or patch.shape[1] != patch.shape[2]:
        raise ValueError(f"{name}: the patch must be (C, s, s), got shape {patch.shape}")
    s = patch.shape[1]
    _check_images(x, s, name)
    if patch.shape[0] != x.shape[1]:
        raise ValueError(f"{name}: a {patch.shape[0]}-channel patch for {x.shape[1]}-channel "
                         f"images")
    if locations is None:
        locations = random_locations(len(x), x.shape[2:], s, seed)
    locations = np.asarray(locations)
    if locations.shape != (len(x), 2) or locations.dtype.kind not in "iu":
        raise ValueError(f"{name}: locations must be ({len(x)}, 2) integers, got "
                         f"{locations.shape} {locations.dtype}")
    if len(x) and (locations.min() < 0 or (locations[:, 0] > x.shape[2] - s).any()
                   or (locations[:, 1] > x.shape[3] - s).any()):
        raise ValueError(f"{name}: a location puts the patch outside the image")
    out = x.copy()
    for n, (r, c) in enumerate(locations):
        out[n, :, r:r + s, c:c + s] = patch
    return out, locations


def adversarial_patch(net, x, target, *, patch_size=8, steps=500, step_size=None, batch_size=32,
                      clip=(0.0, 1.0), seed=0):
    """Train a universal patch that makes ``net`` predict ``target`` wherever it is pasted.

    Brown et al. 2017, "Adversarial Patch" (arXiv:1712.09665).

    Parameters
    ----------
    net : robustcnn ``Net`` taking images (C, H, W) (eval mode, any weight formats).
    x : (N, C, H, W) training images inside ``clip`` (the patch should be evaluated on others).
    target : the class the patch should produce (an int).
    patch_size : side of the square patch in pixels; it covers all channels.
    steps : gradient steps (500).
    step_size : signed step per iteration in data units; default 1% of the clip range (0.01
        when clip is None).
    batch_size : images per step, drawn with replacement, each with a random location.
    clip : (low, high) valid range of the patch's values, or None.
    seed : seeds the initial patch (uniform in the range; in [0, 1] when clip is None), the
        images drawn and the locations; the result is a deterministic function of the seed.

    Returns the patch, (C, patch_size, patch_size) in the net's dtype. Paste it with
    ``apply_patch``; measure it with ``patch_success_rate``.

    Not guaranteed: any success rate; nothing about rotations or scales (not trained for).
    """
    name = "adversarial_patch"
    patch_size = check_int(patch_size, "patch_size", name)
    steps = check_int(steps, "steps", name)
    batch_size = check_int(batch_size, "batch_size", name)
    bounds = check_clip_pair(clip, name)
    span = 1.0 if bounds is None else bounds.span
    step_size = 0.01 * span if step_size is None else check_float(
        step_size, "step_size", name, low=0, low_open=True)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) \
            or not 0 <= target < net.num_classes:
        raise ValueError(f"{name}: target must be a class in [0, {net.num_classes}), got "
                         f"{target!r}")
    x, _ = check_inputs(net, x, None, name, predict=False)
    bounds = check_clip(clip, x, name)  # per channel where the clip is
    _check_images(x, patch_size, name)
    if not len(x):
        raise ValueError(f"{name}: needs at least one training image")
    rng = np.random.default_rng(seed)
    lo, hi = bounds if bounds is not None else (0.0, 1.0)
    patch = rng.uniform(lo, hi, size=(x.shape[1], patch_size, patch_size)).astype(x.dtype)
    labels = np.full(batch_size, target, dtype=np.int64)
    s = patch_size
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch_size)
        where = random_locations(batch_size, x.shape[2:], s, rng.integers(2**63))
        xb, _ = apply_patch(x[idx], patch, where)
        _, grad, _ = loss_grad_logits(net, xb, labels)
        window = np.stack([grad[n, :, r:r + s, c:c + s] for n, (r, c) in enumerate(where)])
        patch = patch - (step_size * np.sign(window.mean(axis=0))).astype(x.dtype)
        if bounds is not None:
            np.clip(patch, lo, hi, out=patch)
    return patch


def patch_success_rate(net, x, patch, target, *, locations=None, seed=0, batch_size=256):
    """Targeted success of a patch: the fraction of the images not already predicted as
    ``target`` that are predicted as ``target`` once patched (at ``locations``, or at random
    ones drawn from ``seed``). NaN if every image was already ``target``."""
    x = np.asarray(x)
    clean = net.predict(x, batch_size=batch_size)
    patched, _ = apply_patch(x, np.asarray(patch, dtype=x.dtype), locations, seed=seed)
    hit = net.predict(patched, batch_size=batch_size) == target
    keep = clean != target
    return float(hit[keep].mean()) if keep.any() else float("nan")
