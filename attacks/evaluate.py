"""Robustness evaluation: accuracy under attack over a list of eps, with perturbation sizes."""

import numpy as np


def robustness_table(net, x, y, eps_list, *, attack, batch_size=256, **attack_kwargs):
    """One row per eps: clean and adversarial accuracy, attack success rate, perturbation norms.

    ``y`` are the true labels; they are what the attack pushes away from. The success rate is
    over the examples the net classified correctly before the attack.
    """
    y = np.asarray(y)
    clean_pred = net.predict(x, batch_size=batch_size)
    clean_ok = clean_pred == y
    rows = []
    for eps in eps_list:
        x_adv = attack(net, x, y, eps, batch_size=batch_size, **attack_kwargs)
        adv_ok = net.predict(x_adv, batch_size=batch_size) == y
        delta = (x_adv - x).reshape(len(x), -1)
        rows.append({
            "eps": float(eps),
            "clean_accuracy": float(clean_ok.mean()),
            "adversarial_accuracy": float(adv_ok.mean()),
            "success_rate": float((clean_ok & ~adv_ok).sum() / max(clean_ok.sum(), 1)),
            "linf_mean": float(np.abs(delta).max(axis=1).mean()),
            "l2_mean": float(np.linalg.norm(delta, axis=1).mean()),
            "examples": int(len(x)),
        })
    return rows


def format_table(rows):
    """The rows of ``robustness_table`` as aligned text."""
    header = f"{'eps':>6}  {'clean acc':>9}  {'adv acc':>8}  {'success':>8}  {'mean Linf':>9}  {'mean L2':>8}"
    lines = [header]
    for r in rows:
        lines.append(f"{r['eps']:6.3f}  {100 * r['clean_accuracy']:8.2f}%  "
                     f"{100 * r['adversarial_accuracy']:7.2f}%  {100 * r['success_rate']:7.2f}%  "
                     f"{r['linf_mean']:9.4f}  {r['l2_mean']:8.4f}")
    return "\n".join(lines)
