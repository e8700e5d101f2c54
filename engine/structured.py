"""Structured fully connected transforms (Sindhwani, Sainath & Kumar, NIPS 2015, "Structured
Transforms for Small-Footprint Deep Learning"): a weight matrix that is circulant, or
Toeplitz-like of low displacement rank r, stored as its generators and applied by FFT in
O(r · n log n) per example instead of O(n²).

The paper's notation. Z_f is the f-unit-circulant shift, Z_f[i, j] = 1 if i = j + 1, f if
(i, j) = (0, n − 1), else 0; Z_f(v) = Σ_k v[k] Z_f^k is the f-circulant matrix with first column v:

    Z_1(v)[i, j]  = v[(i − j) mod n]                              (circulant)
    Z_−1(v)[i, j] = v[i − j] if i ≥ j, else −v[n + i − j]          (skew-circulant)

The layers' matrices (G, H: (r, n), their rows the generators g_k, h_k):

    circulant:            W = Z_1(g)
    Toeplitz-like:        W = Σ_{k<r} Z_1(g_k) Z_−1(h_k)

Why the second is "Toeplitz-like of displacement rank ≤ r": Z_1 commutes with Z_1(g), Z_−1 with
Z_−1(h), and Z_1 − Z_−1 = 2 e_0 e_{n−1}ᵀ, so the paper's Sylvester displacement operator gives

    ∇[W] = Z_1 W − W Z_−1 = Σ_k Z_1(g_k) (Z_1 − Z_−1) Z_−1(h_k) = 2 G (J H)ᵀ

(J reverses a vector: e_{n−1}ᵀ Z_−1(h) = (J h)ᵀ, the last row), a rank-≤ r matrix. The paper
writes the same set as M = ½ Σ Z_1(g_k) Z_−1(J h_k) for ∇[M] = G Hᵀ; training h directly is the
same family with h ← J h / 2. r = 1 with h = e_0 is the circulant Z_1(g); a Toeplitz matrix has
displacement rank ≤ 2.

FFT identities used (F the DFT, D = diag(ω^k) with ω = exp(iπ/n), so ω^n = −1 and
Z_−1(h) = D⁻¹ Z_1(D h) D):

    Z_1(g) x  = F⁻¹(F g ⊙ F x)               Z_1(g)ᵀ y  = F⁻¹(conj(F g) ⊙ F y)
    Z_−1(h) x = D⁻¹ F⁻¹(F(D h) ⊙ F(D x))     Z_−1(h)ᵀ y = D⁻¹ F⁻¹(conj(F(D h)) ⊙ F(D y))

(a real W's transpose is its conjugate transpose, and D is unitary). Both products commute in
their two vectors (Z_1(g) x = Z_1(x) g, Z_−1(h) x = Z_−1(x) h), which gives the generator
gradients: with u_k = Z_−1(h_k) x and du_k = Z_1(g_k)ᵀ dy,
    dg_k = Σ_b Z_1(u_bk)ᵀ dy_b,   dh_k = Σ_b Z_−1(x_b)ᵀ du_bk,   dx = Σ_k Z_−1(h_k)ᵀ du_k.

Non-square layers (in ≠ out): n = max(in, out); the input is zero-padded to n and the first
``out`` outputs are kept, i.e. the layer's matrix is W[:out, :in] (pad/truncate; the paper's
experiments use square transforms). Batches are (B, in) → (B, out). scipy.fft keeps float32 as
complex64, so a float32 layer computes in single precision throughout.
"""

import numpy as np
from scipy import fft

STRUCTURES = ("circulant", "toeplitz-like")


def transform_size(in_features, out_features):
    """n of the square transform: the larger side (the input is padded, the output cut)."""
    return max(int(in_features), int(out_features))


def generator_shapes(structure, n, rank):
    """{name: shape} of a structure's generators: circulant g (n,); Toeplitz-like g, h (r, n)."""
    if structure == "circulant":
        return {"g": (n,)}
    return {"g": (rank, n), "h": (rank, n)}


# The Toeplitz-like generators h_k start at e_0/√r plus noise of this standard deviation × 1/√n.
H_NOISE = 0.01


def initial_generators(structure, n, rank, fan_in, normal):
    """Initial generators {name: array} whose W has entries of variance ≈ 1/fan_in (Caffe's
    xavier variance); ``normal(shape)`` draws N(0, 1) values.

    Circulant: g ~ N(0, 1/fan_in). Toeplitz-like: the same g_k and h_k = e_0/√r + small noise,
    so that W starts near the circulant Σ_k Z_1(g_k)/√r: drawing both g and h at random with
    the product's variance (r n σ⁴ = 1/fan_in) starts at the saddle of a product, and trained
    more slowly in our runs (Fashion-MNIST, 6,000 images, 2 epochs at lr 0.002, rank 1: 59.9%
    train accuracy against 68.7%). The paper's initialisation is not reproduced."""
    g = normal(generator_shapes(structure, n, rank)["g"]) / np.sqrt(fan_in)
    if structure == "circulant":
        return {"g": g}
    h = normal((rank, n)) * (H_NOISE / np.sqrt(n))
    h[:, 0] += 1.0 / np.sqrt(rank)
    return {"g": g, "h": h}


def _twiddles(n, dtype):
    """D's diagonal ω^k = exp(iπk/n), k < n, in the complex type of ``dtype``."""
    complex_dtype = np.result_type(dtype, np.complex64)
    return np.exp(1j * np.pi * np.arange(n) / n).astype(complex_dtype)


def circulant_forward(x, g, out_features):
    # x: (B, I); g: (n,) → y: (B, O);   y_b = (Z_1(g) [x_b; 0])[:O] = F⁻¹(F g ⊙ F x̃_b)[:O]
    n = g.shape[0]
    y = fft.irfft(fft.rfft(g) * fft.rfft(x, n=n, axis=1), n=n, axis=1)
    return np.ascontiguousarray(y[:, :out_features], dtype=x.dtype)


def circulant_backward(dy, x, g, *, need_input=True, need_weight=True):
    # dy: (B, O); x: (B, I); g: (n,) → dx (B, I) or None, dg (n,) or None
    # dx_b = (Z_1(g)ᵀ [dy_b; 0])[:I];   dg = Σ_b Z_1(x̃_b)ᵀ dỹ_b = F⁻¹(Σ_b conj(F x̃_b) ⊙ F dỹ_b)
    n = g.shape[0]
    dY = fft.rfft(dy, n=n, axis=1)
    dx = dg = None
    if need_input:
        dx = fft.irfft(np.conj(fft.rfft(g)) * dY, n=n, axis=1)[:, :x.shape[1]]
        dx = np.ascontiguousarray(dx, dtype=x.dtype)
    if need_weight:
        spectrum = (np.conj(fft.rfft(x, n=n, axis=1)) * dY).sum(axis=0)
        dg = fft.irfft(spectrum, n=n).astype(g.dtype)
    return dx, dg


def toeplitz_like_forward(x, g, h, out_features):
    # x: (B, I); g, h: (r, n) → y (B, O), saved (what the backward reuses)
    # u_bk = Z_−1(h_k) x̃_b = D⁻¹ F⁻¹(F(D h_k) ⊙ F(D x̃_b));  y_b = Σ_k F⁻¹(F g_k ⊙ F u_bk)[:O]
    n = g.shape[1]
    d = _twiddles(n, x.dtype)
    Xd = fft.fft(x * d[:x.shape[1]], n=n, axis=1)  # (B, n) F(D x̃)
    Hd = fft.fft(h * d, axis=1)  # (r, n) F(D h)
    u = (fft.ifft(Hd[None] * Xd[:, None], axis=2) * np.conj(d)).real  # (B, r, n); D⁻¹ = conj D
    U = fft.rfft(u, axis=2)  # (B, r, n/2+1)
    y = fft.irfft((fft.rfft(g, axis=1)[None] * U).sum(axis=1), n=n, axis=1)
    return np.ascontiguousarray(y[:, :out_features], dtype=x.dtype), (Xd, U)


def toeplitz_like_backward(dy, saved, g, h, in_features, *, need_input=True, need_weight=True):
    # dy: (B, O); saved: toeplitz_like_forward's; g, h: (r, n) → dx (B, I), dg, dh (r, n)
    # du_bk = Z_1(g_k)ᵀ dỹ_b;  dx_b = Σ_k Z_−1(h_k)ᵀ du_bk;  dg_k = Σ_b Z_1(u_bk)ᵀ dỹ_b;
    # dh_k = Σ_b Z_−1(x̃_b)ᵀ du_bk
    Xd, U = saved
    n = g.shape[1]
    d = _twiddles(n, dy.dtype)
    dY = fft.rfft(dy, n=n, axis=1)  # (B, n/2+1)
    du = fft.irfft(np.conj(fft.rfft(g, axis=1))[None] * dY[:, None], n=n, axis=2)  # (B, r, n)
    dUd = fft.fft(du * d, axis=2)  # (B, r, n) F(D du)
    dx = dg = dh = None
    if need_input:
        Hd = fft.fft(h * d, axis=1)
        dx = (fft.ifft((np.conj(Hd)[None] * dUd).sum(axis=1), axis=1) * np.conj(d)).real
        dx = np.ascontiguousarray(dx[:, :in_features], dtype=dy.dtype)
    if need_weight:
        dg = fft.irfft((np.conj(U) * dY[:, None]).sum(axis=0), n=n, axis=1).astype(g.dtype)
        dh = (fft.ifft((np.conj(Xd)[:, None] * dUd).sum(axis=0), axis=1) * np.conj(d)).real
        dh = dh.astype(h.dtype)
    return dx, dg, dh


def structured_forward(structure, x, params, out_features):
    """y (B, O) and what ``structured_backward`` needs, for either structure."""
    if structure == "circulant":
        return circulant_forward(x, params["g"], out_features), x
    return toeplitz_like_forward(x, params["g"], params["h"], out_features)


def structured_backward(structure, dy, saved, params, in_features, *, need_input=True,
                        need_weight=True):
    """(dx or None, {generator: gradient} or None) for ``structured_forward``'s ``saved``."""
    if structure == "circulant":
        dx, dg = circulant_backward(dy, saved, params["g"], need_input=need_input,
                                    need_weight=need_weight)
        return dx, ({"g": dg} if need_weight else None)
    dx, dg, dh = toeplitz_like_backward(dy, saved, params["g"], params["h"], in_features,
                                        need_input=need_input, need_weight=need_weight)
    return dx, ({"g": dg, "h": dh} if need_weight else None)


def structured_dense(structure, params, out_features, in_features, *, chunk=256):
    """The layer's matrix W[:O, :I] (O, I) as a dense array, by applying the transform to the
    identity ``chunk`` columns at a time: for export and inspection (tests build W entry by
    entry instead)."""
    dtype = params["g"].dtype
    W = np.empty((out_features, in_features), dtype)
    for lo in range(0, in_features, chunk):
        hi = min(lo + chunk, in_features)
        eye = np.zeros((hi - lo, in_features), dtype)
        eye[np.arange(hi - lo), np.arange(lo, hi)] = 1
        W[:, lo:hi] = structured_forward(structure, eye, params, out_features)[0].T
    return W
