"""The Square attack: score-based random search, L∞ and L2, no gradients.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020 (Algorithms 1–3). It reads only the logits
(``net.logits``), so gradient masking (a quantised activation, a flat loss surface) does not
blind it. Per example, with L the loss to minimise (margin: z_y − max_{k≠y} z_k; targeted:
max_{k≠t} z_k − z_t; or the cross-entropy, negated when untargeted):

    x̂ = init(x)                                   the first query
    for i = 0, 1, …, n_queries − 2, while x̂ is not adversarial:
        x_new = clip(x + update(x̂ − x, side_i))    one query
        if L(x_new) < L(x̂) or x_new fools the net:  x̂ = x_new
                                                   (by more than the logits' rounding noise)

    side_i = round(√(p_i · H · W)),  p_i = p_init / 2^j,  j = #{t ∈ T : t < ⌊10⁴ · i / n_queries⌋}
    T = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)   (the paper's 10,000-query schedule)

L∞ (Alg. 2): init = vertical stripes, x ± eps per (channel, column) with random signs; the
update sets one random side × side square of x̂ to x ± eps, a random sign per channel (the
paper's "add ±2·eps and project": the same point), redrawn while it would not change x̂.
L2 (Alg. 3): init = a grid of tiles of side ⌊min(H, W)/5⌋, each a pair of pseudo-Gaussian
bumps of opposite signs with a random sign per channel, scaled to ‖δ‖₂ = eps; the update
draws two windows of the same side (odd, ≥ 3): window 2's mass is moved into window 1, which
becomes the normalised sum of its old content and a new pair of bumps, scaled so that the
perturbation keeps ‖δ‖₂ = eps (then the box clip may shorten it).

Batched: every iteration evaluates all still-active examples of a batch in one ``net.logits``
call; each example stops at its first success (its query counter then stops too).

Against AutoAttack's implementation (and torchattacks', its port): every example draws its own
window position and signs (they draw one per iteration for the whole batch), windows reach the
last row and column, and an L∞ square that would leave x̂ as it is gets new signs before it is
queried (the paper's reference code does this; AutoAttack queries the repeat, up to half of its
late queries on one-channel images). Same search otherwise; ours fools more for a given budget.
"""

import bisect
import functools
import math

import numpy as np

from ._common import (batch_slices, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, clip_to, cross_entropy,
                      fooled, margin)
from .norms import check_norm, l2_norms

# The iterations of a 10,000-query run after which p halves (the paper's schedule, §3).
SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
LOSSES = ("margin", "ce")
# A window whose new sign pattern leaves x̂ as it is gets new signs, at most this many times.
_REDRAWS = 100
_SIGNS = np.array([-1.0, 1.0])


def random_signs(rng, shape):
    """An array of ±1.0 of ``shape``, each sign a fair draw from ``rng``: the numbers
    ``rng.choice([-1.0, 1.0], size=shape)`` gives (the same draws, at half its overhead: a
    run draws signs several times per iteration)."""
    return _SIGNS[rng.integers(0, 2, size=shape)]


def square_fraction(i, n_queries, p_init):
    """p_i: the fraction of the image's pixels that update i changes (i = 0, 1, … after the
    initial query), the paper's piecewise-constant schedule rescaled to ``n_queries``."""
    it = int(i / n_queries * 10000)
    return p_init / 2 ** bisect.bisect_left(SCHEDULE, it)


def square_side(i, n_queries, p_init, height, width, norm):
    """The side of update i's square: round(√(p_i · H · W)), at least 1 (L∞) or at least 3
    and odd (L2), at most min(H, W)."""
    side = int(round(math.sqrt(square_fraction(i, n_queries, p_init) * height * width)))
    if norm == "l2":
        side = max(side, 3)
        side += side % 2 == 0
    return max(1, min(side, height, width))


def image_shape(input_shape):
    """The (C, H, W) the attack's squares live in: an image as it is, (H, W) as one channel,
    a flat (D,) input as a 1 × D image (whose squares are single values)."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 2:
        return (1,) + shape
    return (1, 1, int(np.prod(shape)))


def square(net, x, y=None, eps=8 / 255, *, norm="linf", n_queries=5000, p_init=0.8, loss="margin",
           clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, progress=None,
           return_info=False):
    """Adversarial examples in the eps-ball by the Square attack's random search.

    Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
    adversarial attack via random search" (ECCV). See the module docstring for the algorithm.

    Parameters
    ----------
    net : robustcnn ``Net`` (or anything with its ``logits``, ``dtype``, ``input_shape`` and
        ``num_classes``); only its logits are read, never a gradient.
    x : (N, …) inputs inside ``clip``: images (C, H, W); other shapes are viewed as images
        (``image_shape``).
    y : (N,) labels to move away from; None (default) uses the net's predictions. With
        ``targeted=True``, the target classes (required).
    eps : radius of the ball in data units (default 8/255, AutoAttack's L∞ radius for
        CIFAR-10). ``eps == 0`` returns a copy of x.
    norm : "linf" or "l2".
    n_queries : the query budget per example, the initial query included (default 5000, the
        paper's ImageNet budget is 10,000); the schedule of square sizes is rescaled to it.
    p_init : the fraction of pixels the first update changes (0.8, the paper's L∞ choice for
        untargeted attacks on ImageNet and AutoAttack's default).
    loss : "margin" (default, the paper's) or "ce" (cross-entropy); success is always the
        label changing (reaching the target when targeted).
    clip : (low, high) valid range of every query, or None.
    targeted : minimise the targeted margin max_{k≠t} z_k − z_t (or the cross-entropy of t).
    batch_size : examples searched together; each iteration queries the batch's still-active
        examples in one forward pass.
    seed : the random draws come from ``np.random.default_rng([seed, b])`` for batch b, so the
        result is a deterministic function of the seed and the batch size.
    progress : None or a callable ``progress(k)``, called as k examples finish (fooled, or
        out of queries); the calls add up to N.
    return_info : also return a dict: ``queries`` (N,) int64, the queries each example used
        (Square's counter: the initial query and one per update; an example the net already
        gets wrong costs 0, the clean pass that finds it is not counted, as in the paper), and
        ``success`` (N,) bool, whether x' fools the net.

    Returns x' (the net's dtype), or (x', info). Per example: the first point that fooled the
    net, else the point of lowest loss found. Every query, x' included, is inside the
    eps-ball around x (L2: up to float rounding) and inside ``clip``.

    Not guaranteed: success within the budget (a random search); the L2 perturbation's norm is
    eps before clipping, so the box can make it shorter.
    """
    name = "square"
    if eps is None:
        raise ValueError(f"{name}: eps is required (the radius of the ball, in data units)")
    eps = check_eps(eps, name)
    norm = check_norm(norm, name)
    n_queries = check_int(n_queries, "n_queries", name)
    p_init = check_float(p_init, "p_init", name, low=0, high=1, low_open=True)
    if loss not in LOSSES:
        raise ValueError(f"{name}: loss must be one of {list(LOSSES)}, got {loss!r}")
    batch_size = check_int(batch_size, "batch_size", name)
    check_progress(progress, name)
    check_clip_pair(clip, name)
    if targeted and y is None:
        raise ValueError(f"{name}: targeted=True needs the target classes y")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    queries = np.zeros(len(x), dtype=np.int64)
    if eps == 0:
        out = x.copy()
        if progress is not None and len(x):
            progress(len(x))
        if not return_info:
            return out
        success = fooled(net.logits(x, batch_size=batch_size), y, targeted)
        return out, {"queries": queries, "success": success}
    images = x.reshape((len(x),) + image_shape(net.input_shape))
    out = images.copy()
    success = np.zeros(len(x), dtype=bool)
    search = _Search(net, eps, norm, n_queries, p_init, loss, bounds, targeted)
    for b, s in enumerate(batch_slices(len(x), batch_size)):
        rng = np.random.default_rng([seed, b])
        out[s], queries[s], success[s] = search.run(images[s], y[s], rng, progress)
    out = out.reshape(x.shape)
    return (out, {"queries": queries, "success": success}) if return_info else out


class _Search:
    """One run of the random search over a batch, with the checked arguments."""

    def __init__(self, net, eps, norm, n_queries, p_init, loss, bounds, targeted):
        self.net, self.eps, self.norm, self.n_queries = net, eps, norm, n_queries
        self.p_init, self.loss, self.bounds, self.targeted = p_init, loss, bounds, targeted

    def scores(self, images, y):
        """One query of every row → (loss, fooled, noise), each (A,): noise is the rounding
        error an equal loss may show (16 units in the last place of the largest logit): the
        logits of one example can change in the last bits with the rows beside it in the
        batch, and such a change is not an improvement."""
        net = self.net
        logits = net.logits(images.reshape((len(images),) + tuple(net.input_shape)),
                            batch_size=max(len(images), 1))
        if self.loss == "margin":
            loss, _ = margin(logits, y, self.targeted)
        else:
            ce = cross_entropy(logits, y).astype(np.float64)
            loss = ce if self.targeted else -ce
        noise = 16 * np.finfo(logits.dtype).eps * (1.0 + np.abs(logits).max(axis=1, initial=0))
        return loss, fooled(logits, y, self.targeted), noise

    def run(self, x, y, rng, progress):
        """→ (x' (A, C, H, W), queries (A,), success (A,)) for one batch of images."""
        n = len(x)
        best = x.copy()
        queries = np.zeros(n, dtype=np.int64)
        best_loss, done, _ = self.scores(x, y)  # the clean pass (not counted)
        finished = 0  # examples reported to ``progress``
        todo = np.flatnonzero(~done)
        if len(todo):
            init = linf_init if self.norm == "linf" else l2_init
            best[todo] = clip_to(init(x[todo], self.eps, rng), self.bounds)
            best_loss[todo], done[todo], _ = self.scores(best[todo], y[todo])
            queries[todo] = 1
        _, _, height, width = x.shape
        update = linf_update if self.norm == "linf" else l2_update
        for i in range(self.n_queries - 1):
            todo = todo[~done[todo]]
            if progress is not None and n - len(todo) > finished:
                progress(n - len(todo) - finished)
                finished = n - len(todo)
            if not len(todo):
                break
            side = square_side(i, self.n_queries, self.p_init, height, width, self.norm)
            candidate = update(x[todo], best[todo], self.eps, side, self.bounds, rng)
            loss, success, noise = self.scores(candidate, y[todo])
            queries[todo] += 1
            better = (loss < best_loss[todo] - noise) | success
            keep = todo[better]
            best[keep] = candidate[better]
            best_loss[keep] = loss[better]
            done[todo] = success
        if progress is not None and finished < n:
            progress(n - finished)
        return best, queries, done


# ---------------------------------------------------------------------------------------------
# L∞ (Algorithm 2)


def linf_init(x, eps, rng):
    """x + eps · (vertical stripes): a random sign per (example, channel, column)."""
    n, c, _, w = x.shape
    signs = random_signs(rng, (n, c, 1, w))
    return x + (eps * signs).astype(x.dtype)


def linf_update(x, best, eps, side, bounds, rng):
    """x̂ with one random side × side square per example set to x + eps · (a random sign per
    channel); signs that would leave the square as it is are redrawn."""
    n, c, h, w = x.shape
    window = window_index(rng.integers(0, h - side + 1, n), rng.integers(0, w - side + 1, n),
                          side)
    # Only the windows are computed, (n, side, side, C) each: late in a run a window is a few
    # pixels of the image. A channel's window takes one of two values, x + eps or x − eps
    # (clipped): both are computed once, and whether each leaves x̂'s window as it is, so that
    # a redraw only looks up (example, channel) flags.
    draws = rng.integers(0, 2, size=(n, c))  # sign −1 or +1 by index, as random_signs draws
    inside, current = x[window], best[window]
    if bounds is not None:  # an end per channel or per pixel: the windows' own values
        bounds = tuple(b if np.ndim(b) == 0 else np.broadcast_to(b, x.shape)[window]
                       for b in bounds)
    minus, plus = _corner(inside, -eps, bounds), _corner(inside, eps, bounds)
    # keeps[n, c, k]: the sign of index k leaves channel c of window n as it is
    keeps = np.stack([(minus == current).all(axis=(1, 2)),
                      (plus == current).all(axis=(1, 2))], axis=-1)
    channels = np.arange(c)
    # A query that changes nothing is wasted (the reference code redraws the same way).
    same = np.flatnonzero(keeps[np.arange(n)[:, None], channels, draws].all(axis=1))
    for _ in range(_REDRAWS):
        if not len(same):
            break
        draws[same] = rng.integers(0, 2, size=(len(same), c))
        same = same[keeps[same[:, None], channels, draws[same]].all(axis=1)]
    out = best.copy()
    out[window] = np.where(draws[:, None, None, :] == 1, plus, minus)
    return out


def _corner(inside, step, bounds):
    """x + step on windows (n, side, side, C) of x, clipped to ``bounds`` (None, or (low,
    high), each a scalar or of the windows' shape)."""
    corner = inside + inside.dtype.type(step)  # the step rounded to the images' dtype
    return corner if bounds is None else np.clip(corner, *bounds, out=corner)


# ---------------------------------------------------------------------------------------------
# L2 (Algorithm 3)


def bump(rows, cols):
    """A pseudo-Gaussian bump on a rows × cols rectangle, unit L2 norm: nested rectangles
    around the centre, the k-th (k = 0 at the centre) adding 1 / (k + 1)²."""
    out = np.zeros((rows, cols))
    if not out.size:
        return out
    r, c = rows // 2, cols // 2
    for k in range(max(r, c) + 1):
        out[max(r - k, 0):r + k + 1, max(c - k, 0):c + k + 1] += 1.0 / (k + 1) ** 2
    return out / np.sqrt((out ** 2).sum())


@functools.lru_cache(maxsize=None)
def bump_pair(side):
    """The L2 update's side × side pattern: a bump on the top ⌊side/2⌋ rows and its negative
    on the rest, unit L2 norm (the paper's two-square η; transposed at random by the callers).
    Read-only and computed once per side: every iteration of a run asks for it."""
    out = np.concatenate([bump(side // 2, side), -bump(side - side // 2, side)])
    out /= np.sqrt((out ** 2).sum())
    out.flags.writeable = False
    return out


def _pair_patterns(side, n, rng):
    """n copies of ``bump_pair(side)``, each transposed with probability 1/2 → (n, side, side)."""
    pattern = bump_pair(side)
    return np.where(rng.random(n)[:, None, None] < 0.5, pattern, pattern.T)


def l2_init(x, eps, rng):
    """x + eps · δ/‖δ‖₂, δ a centred grid of tiles of side ⌊min(H, W)/5⌋ (at least 1), each a
    bump pair with a random orientation per example and a random sign per channel."""
    n, c, h, w = x.shape
    tile = max(min(h, w) // 5, 1)
    rows, cols = h // tile, w // tile
    top, left = (h - rows * tile) // 2, (w - cols * tile) // 2
    delta = np.zeros(x.shape)
    for i in range(rows):
        for j in range(cols):
            signs = random_signs(rng, (n, c, 1, 1))
            pattern = _pair_patterns(tile, n, rng)[:, None]
            r, q = top + i * tile, left + j * tile
            delta[:, :, r:r + tile, q:q + tile] += pattern * signs
    return x + (eps * _unit(delta)).astype(x.dtype)


def l2_update(x, best, eps, side, bounds, rng):
    """x + eps · δ'/‖δ'‖₂ clipped to ``bounds`` (None: no clip), where δ' is δ = x̂ − x with
    window 2 emptied and window 1 replaced by the normalised sum of its old content and a new
    bump pair (random sign per channel), of per-channel norm
    √(max(eps² − ‖δ‖², 0)/C + ‖δ on both windows‖²)."""
    n, c, h, w = x.shape
    delta = (best - x).astype(np.float64)
    top1, left1 = rng.integers(0, h - side + 1, n), rng.integers(0, w - side + 1, n)
    top2, left2 = rng.integers(0, h - side + 1, n), rng.integers(0, w - side + 1, n)
    both = window_mask(top1, left1, side, h, w) | window_mask(top2, left2, side, h, w)
    windows_norm = np.sqrt((delta ** 2 * both[:, None]).sum(axis=(2, 3)))  # (n, c)
    image_norm = l2_norms(delta)  # (n,)
    first = window_index(top1, left1, side)
    old = delta[first]  # (n, side, side, c)
    old_norm = np.sqrt((old ** 2).sum(axis=(1, 2), keepdims=True))
    signs = random_signs(rng, (n, 1, 1, c))
    new = _pair_patterns(side, n, rng)[..., None] * signs + old / (1e-12 + old_norm)
    new_norm = np.sqrt((new ** 2).sum(axis=(1, 2), keepdims=True))
    budget = np.sqrt(np.maximum(eps ** 2 - image_norm ** 2, 0.0)[:, None] / c + windows_norm ** 2)
    new *= budget[:, None, None, :] / np.where(new_norm > 0, new_norm, 1.0)
    delta[window_index(top2, left2, side)] = 0.0
    delta[first] = new
    return clip_to(x + (eps * _unit(delta)).astype(x.dtype), bounds)


# ---------------------------------------------------------------------------------------------
# Windows


def window_mask(top, left, side, height, width):
    """(n, H, W) bool: True on each example's side × side window at (top[n], left[n])."""
    rows = np.arange(height)[None, :]
    cols = np.arange(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return in_rows[:, :, None] & in_cols[:, None, :]


def window_index(top, left, side):
    """An index for a[n, :, top[n] + i, left[n] + j] of an (n, C, H, W) array a: a[index] is
    (n, side, side, C) (numpy puts the broadcast index dimensions first)."""
    steps = np.arange(side)
    return (np.arange(len(top))[:, None, None], slice(None),
            (top[:, None] + steps)[:, :, None], (left[:, None] + steps)[:, None, :])


def _unit(delta):
    """delta / ‖delta‖₂ per example (a zero delta stays zero)."""
    length = l2_norms(delta)
    return delta / np.where(length > 0, length, 1.0).reshape((-1,) + (1,) * (delta.ndim - 1))
