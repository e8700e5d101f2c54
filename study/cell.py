"""Evaluate one cell of a study: one attack at one eps on one model, or a model's sanity checks.

``evaluate_cell(study, cell, nets, infos, xt, yt)`` is a pure step (the nets are only read),
so the runner can call it in this process or on a Dask worker. The row it returns has the
columns of ``store.COLUMNS`` except ``key``: an attack cell's ``outcomes`` say per test image
whether the model was right on the clean and on the adversarial image (the paired tests of
the report need them), and every row's ``provenance`` where it was computed.

- A bounded attack (FGSM, BIM, PGD, …) at eps: white-box on the model, or crafted on a
  ``source`` model and transferred (Papernot et al. 2016).
- An unbounded attack (DeepFool, C&W, …): one run; the row's ``eps`` is None and ``metrics``
  holds the perturbation sizes it needed and, for each of the attack's eps thresholds, the
  accuracy that remains when only perturbations within it count.
- The sanity cell (``config.SANITY``): the checks of ``attacks.sanity`` on the first
  ``sanity_examples`` test images at the study's eps — once per model and seed, not once per
  cell. The report attaches its verdict to the model's rows.
"""

import time

import numpy as np

from ..progress import progress_bar
from .config import SANITY, adversarial_recipe_label
from .provenance import cell_provenance
from .store import encode_outcomes, versions

# ‖x' − x‖ ≤ eps holds up to float32 rounding of x'.
_NORM_SLACK = 1e-6


def _accuracy_within(clean_ok, adv_ok, sizes, eps):
    """Accuracy when an attack only counts where its perturbation is within eps."""
    fooled = clean_ok & ~adv_ok & (sizes <= eps * (1 + _NORM_SLACK))
    return float((clean_ok & ~fooled).mean()) if len(clean_ok) else float("nan")


def _cell_bar(progress, label, total):
    """The bar of one cell's examples attacked (under the study's bar), with its ETA."""
    return progress_bar(enabled=progress, desc=label, total=total, unit="ex", leave=False,
                        position=1)


def run_attack(study, cell, nets, xt, yt, *, progress=False):
    """(metrics row of ``attacks.evaluate.attack_row``, extra metrics, (clean_ok, adv_ok,
    sizes): per image, right on the clean and on the adversarial image, and for an unbounded
    attack the size of its perturbation in the attack's norm, else None) of an attack cell."""
    from ..attacks.evaluate import attack_row
    from ..attacks.norms import perturbation_norms
    from ..attacks.registry import resolve_attack

    spec = study.attacks[cell.attack]
    net = nets[cell.model]
    crafter = nets[spec.source] if spec.source else net
    fn = resolve_attack(spec.name, "study")
    with _cell_bar(progress, f"{cell.model} {cell.attack}", len(xt)
                   * spec.options.get("restarts", 1)) as bar:
        x_adv = fn(crafter, xt, yt, cell.eps, clip=(0.0, 1.0), batch_size=study.batch_size,
                   seed=cell.seed, progress=bar.update, **spec.options)
    clean_ok = net.predict(xt, batch_size=study.batch_size) == yt
    adv_ok = net.predict(x_adv, batch_size=study.batch_size) == yt
    row = attack_row(xt, x_adv, clean_ok, adv_ok, cell.eps)
    extra = {"options": dict(spec.options)} if spec.options else {}
    if spec.source:
        extra["source"] = spec.source
        extra["source_clean_accuracy"] = float(
            (crafter.predict(xt, batch_size=study.batch_size) == yt).mean())
    sizes = None
    if not spec.bounded:
        sizes = perturbation_norms(xt, x_adv)[spec.norm]
        found = clean_ok & ~adv_ok
        extra["norm"] = spec.norm
        extra["size_median_fooled"] = float(np.median(sizes[found])) if found.any() else None
        extra["size_mean_fooled"] = float(sizes[found].mean()) if found.any() else None
        extra["accuracy_within"] = {f"{e:g}": _accuracy_within(clean_ok, adv_ok, sizes, e)
                                    for e in spec.eps}
    return row, extra, (clean_ok, adv_ok, sizes)


def run_sanity(study, cell, net, xt, yt, *, progress=False):
    """The sanity checks of one model at the study's eps → (clean accuracy, [check dicts])."""
    from ..attacks.sanity import sanity_checks, sanity_work

    n = min(study.sanity_examples, len(xt))
    x, y = xt[:n], yt[:n]
    clean_ok = net.predict(x, batch_size=study.batch_size) == y
    eps = study.bounded_eps() or [0.1]
    # Several attacks at several eps: their examples' total known beforehand, for the ETA.
    total = sanity_work(net, x, y, {}, eps, subset=n, batch_size=study.batch_size) \
        if progress else None
    with _cell_bar(progress, f"{cell.model} sanity checks", total) as bar:
        checks = sanity_checks(net, x, y, {}, eps, clean_ok=clean_ok,
                               subset=n, batch_size=study.batch_size, seed=cell.seed,
                               progress=bar.update)
    return float(clean_ok.mean()), [c.to_dict() for c in checks]


def evaluate_cell(study, cell, nets, infos, xt, yt, *, progress=False, images=None):
    """One cell's row (without its key). ``nets`` / ``infos``: name → Net / artifact info for
    every model of ``study.cell_models(cell)``. ``progress``: a bar of the cell's examples.
    ``images``: the test-set indices of ``xt`` (default: the first ``len(xt)``). An attack
    with ``examples`` attacks only the first that many of them."""
    spec = study.model(cell.model)
    attack = study.attacks.get(cell.attack)
    if attack is not None and attack.examples and attack.examples < len(xt):
        xt, yt = xt[:attack.examples], yt[:attack.examples]
        images = None if images is None else images[:attack.examples]
    started = time.time()
    t0 = time.perf_counter()
    row = {"study": study.name, "model": cell.model,
           "model_key": study.model_key(cell.model, cell.seed), "kind": spec.kind,
           "arch": study.arch(cell.model), "attack": cell.attack, "eps": cell.eps,
           "seed": cell.seed,
           "settings": study.compression(spec) if spec.kind == "compressed" else
           {"train": spec.train, "kwargs": spec.kwargs, "options": spec.options,
            "base": spec.base, "teacher": spec.teacher},
           "model_info": {**{k: v for k, v in infos[cell.model].items()
                             if k not in ("build_seconds", "stages")},
                          "adversarial": study.adversarial(cell.model),
                          "adversarial_training": adversarial_recipe_label(
                              study.adversarial_recipe(cell.model)),
                          "parents": spec.parents}}
    if cell.attack == SANITY:
        clean, checks = run_sanity(study, cell, nets[cell.model], xt, yt, progress=progress)
        row.update(examples=min(study.sanity_examples, len(xt)), clean_accuracy=clean,
                   sanity=checks, sanity_passed=all(c["passed"] for c in checks),
                   metrics={"checked_eps": study.bounded_eps()})
    else:
        metrics, extra, (clean_ok, adv_ok, sizes) = run_attack(study, cell, nets, xt, yt,
                                                        progress=progress)
        metrics.update(extra)
        row["outcomes"] = encode_outcomes(np.arange(len(xt)) if images is None else images,
                                          clean_ok, adv_ok, sizes)
        row.update(norm=study.attacks[cell.attack].norm, examples=metrics["examples"],
                   clean_accuracy=metrics["clean_accuracy"],
                   adversarial_accuracy=metrics["adversarial_accuracy"],
                   success_rate=metrics["success_rate"], linf_mean=metrics["linf_mean"],
                   l2_mean=metrics["l2_mean"], metrics=metrics)
    # Timings stay out of the metrics: equal seeds give equal metrics.
    row.update(seconds=time.perf_counter() - t0, started=started, finished=time.time(),
               versions=versions(), provenance=cell_provenance(study))
    return row
