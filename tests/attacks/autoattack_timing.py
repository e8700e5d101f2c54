"""Time AutoAttack standard on a LeNet-5: robustcnn against torchattacks 3.5.1 on the same weights,
the same images and the same number of threads (a standalone function for the bench):

    PYTHONPATH=<checkout's parent> python tests/attacks/autoattack_timing.py MODEL
        [--examples 1000] [--eps 0.1] [--norm linf] [--threads 1]

torchattacks runs the authors' settings (``autoattack_oracle.torchattacks_attacks``: 100
iterations, 9 targets, 5,000 Square queries), and its ``AutoAttack`` class as shipped (10
iterations per attack) for information. Both sides get a warm-up call first (Numba's kernels,
torch's allocator). Square's queries per second are timed alone on the points APGD-CE leaves
robust.
"""

import argparse
import os
import sys
import time

import numpy as np


def time_autoattack(net, x, y, *, eps=0.1, norm="linf", threads=1, shipped=True, log=print):
    """{"ours_s", "ours_rate", "theirs_s", "theirs_rate", "theirs_shipped_s", "ours_robust",
    "theirs_robust", "square_queries_per_s": (ours, theirs), "threads"}: seconds and
    images per second of AutoAttack standard on (x, y), robust accuracies, Square's queries/s."""
    import numba
    import torch
    from autoattack_oracle import robust_accuracy, torchattacks_attacks
    from torch_nets import torch_sequential

    from robustcnn.attacks import apgd, autoattack, square

    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    model = torch_sequential(net)
    theirs = torchattacks_attacks(model, norm, eps, net.num_classes)
    tx, ty = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    def torch_predict(a):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(a, np.float32))).argmax(1).numpy()

    autoattack(net, x[:8], y[:8], eps, norm=norm, n_iter=2, n_queries=4)  # warm-up
    theirs["apgd-ce"](tx[:8], ty[:8])
    out = {"threads": threads, "examples": len(x)}
    t0 = time.perf_counter()
    adv = autoattack(net, x, y, eps, norm=norm)
    out["ours_s"] = time.perf_counter() - t0
    out["ours_robust"] = robust_accuracy(net.predict, x, adv, y, norm, eps)
    log(f"robustcnn AutoAttack: {out['ours_s']:.1f} s, robust {100 * out['ours_robust']:.2f}%")
    t0 = time.perf_counter()
    adv_t = theirs["autoattack"](tx, ty).detach().numpy()
    out["theirs_s"] = time.perf_counter() - t0
    out["theirs_robust"] = robust_accuracy(torch_predict, x, adv_t, y, norm, eps)
    log(f"torchattacks (authors' settings): {out['theirs_s']:.1f} s, robust "
        f"{100 * out['theirs_robust']:.2f}%")
    if shipped:
        t0 = time.perf_counter()
        theirs["autoattack-shipped"](tx, ty)
        out["theirs_shipped_s"] = time.perf_counter() - t0
        log(f"torchattacks AutoAttack as shipped (10 iterations): {out['theirs_shipped_s']:.1f} s")
    out["ours_rate"] = len(x) / out["ours_s"]
    out["theirs_rate"] = len(x) / out["theirs_s"]
    # Square alone, on the points APGD-CE leaves robust, its whole budget of queries.
    left = np.flatnonzero(net.predict(apgd(net, x, y, eps, norm=norm)) == y)[:64]
    if len(left):
        t0 = time.perf_counter()
        _, info = square(net, x[left], y[left], eps, norm=norm, return_info=True)
        ours_q = info["queries"].sum() / (time.perf_counter() - t0)
        from torchattacks.attacks.square import Square
        sq = Square(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=5000,
                    seed=0)
        sq.init_hyperparam(tx[left])
        torch.manual_seed(0)
        t0 = time.perf_counter()
        with torch.no_grad():
            counts, _ = sq.attack_single_run(tx[left], ty[left])
        theirs_q = float(counts.sum()) / (time.perf_counter() - t0)
        out["square_queries_per_s"] = (float(ours_q), theirs_q)
        log(f"Square on {len(left)} points APGD-CE left: {ours_q:.0f} queries/s (torchattacks "
            f"{theirs_q:.0f})")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--norm", default="linf", choices=("linf", "l2"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from robustcnn.cli import load_model_file
    from robustcnn.models.datasets import load_dataset

    net, _ = load_model_file(args.model)
    x, y = load_dataset("fashion-mnist", "test")
    x, y = x[:args.examples], y[:args.examples]
    print(f"{os.path.basename(args.model)}, {args.examples} images, {args.norm} eps {args.eps}, "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.2f}")
    r = time_autoattack(net, x, y, eps=args.eps, norm=args.norm, threads=args.threads)
    print(f"images/s: robustcnn {r['ours_rate']:.1f}, torchattacks {r['theirs_rate']:.1f} "
          f"(×{r['ours_rate'] / r['theirs_rate']:.2f}); load average after "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
