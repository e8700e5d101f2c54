"""The report's adversarial-aware section, the paper's second claim: compressed models by how
adversarial training entered their making — inside the prune-retrain and fine-tune steps
(adversarial-aware compression), after compression, or before it (an adversarially trained
base) — beside plain compression and the adversarially trained dense models, each with the
attack it trained on and 95% intervals.

Then, under the headline attack (``inference.headline_attack``), each adversarial-aware model
is paired with every model it claims to beat: the other orders trained on the same attack at a
matched compression ratio (within ``tables.MATCHED``), plain compression at a matched ratio,
and the dense model adversarially trained on the same attack. Each pair's differences over
seeds × eps get the Wilcoxon signed-rank and sign tests (``inference.across``) and McNemar's
test per seed and eps; the Wilcoxon p-values of all pairs are one family, Holm-adjusted.
"""

from .. import stats
from ..config import ADVERSARIAL_LINEAGE, COMPRESSED_KINDS
from .headline import ci_text, p_text
from .inference import across, cell_interval, headline_attack, paired_seeds
from .tables import MATCHED, column_label, markdown_table

AWARE = "compressed"  # ``Study.adversarial``'s word for adversarial training inside compression


def lineage(m):
    """How adversarial training entered a model's making (``Study.adversarial``): "" never,
    else the kinds along its lineage, its own first, e.g. "compressed" or "compressed+dense"."""
    return m["info"].get("adversarial") or ""


def order_words(m):
    """A lineage in words: "adversarial-aware compression", "adversarial training, then
    compress", …; a dense model's own adversarial training is "adversarial training (dense)"."""
    if m["kind"] == "dense":
        return "adversarial training (dense, not compressed)"
    kinds = [k for k in lineage(m).split("+") if k]
    words = "; ".join(ADVERSARIAL_LINEAGE.get(k, k) for k in kinds) or "none (plain compression)"
    return words + (f" ({pruning(m)} pruning)" if pruning(m) != "magnitude" else "")


def pruning(m):
    """The pruning method of a compressed model's making (``compress.pruning_methods``):
    "magnitude", Deep Compression's, unless its settings name another."""
    return m["settings"].get("pruning") or "magnitude"


def training_attack(m):
    """The attack a model's lineage trained on, in words (``config.adversarial_recipe_label``);
    "–" for a database written before it was recorded, "" when it never trained adversarially."""
    if not lineage(m):
        return ""
    return m["info"].get("adversarial_training") or "–"


def _ratio(m):
    return m["info"].get("compression_ratio", 0) or 0


def _matched(a, b):
    ra, rb = _ratio(a), _ratio(b)
    return ra > 0 and rb > 0 and max(ra, rb) / min(ra, rb) <= MATCHED


def members(models):
    """The section's models in table order: compressed models of studies that record lineages
    and the adversarially trained dense models; [] when no compressed model's lineage trained
    adversarially."""
    compressed = [n for n, m in models.items() if m["kind"] in COMPRESSED_KINDS
                  and m["info"].get("adversarial") is not None]
    if not any(lineage(models[n]) for n in compressed):
        return []
    dense = [n for n, m in models.items() if m["kind"] == "dense" and lineage(m)]
    return sorted(dense + compressed, key=lambda n: (
        training_attack(models[n]), models[n]["kind"] != "dense", lineage(models[n]),
        _ratio(models[n])))


def rivals(models):
    """(adversarial-aware model, rival, relation) for every pair the claim is about (see the
    module), in the section's order."""
    names = members(models)
    pairs = []
    for a in names:
        ma = models[a]
        if ma["kind"] == "dense" or lineage(ma).split("+")[0] != AWARE or \
                pruning(ma) != "magnitude":
            continue
        for b in names:
            mb = models[b]
            if b == a:
                continue
            if lineage(mb).split("+")[0] == AWARE:
                # A robust-pruning baseline (HYDRA, ADMM) against Deep Compression's
                # adversarial-aware pruning, on the same attack at a matched ratio.
                if (pruning(ma) == "magnitude" and pruning(mb) != "magnitude"
                        and training_attack(mb) == training_attack(ma) and _matched(ma, mb)):
                    pairs.append((a, b, f"robust pruning: {pruning(mb)}"))
                continue
            if mb["kind"] == "dense":
                if training_attack(mb) == training_attack(ma):
                    pairs.append((a, b, "adversarially trained dense"))
            elif not _matched(ma, mb):
                continue
            elif not lineage(mb):
                pairs.append((a, b, "plain compression"))
            elif training_attack(mb) == training_attack(ma):
                pairs.append((a, b, "other order: " + order_words(mb)))
    return pairs


def _mcnemar_counts(a, b, columns):
    """(aware significantly better, rival significantly better, tests) over McNemar's exact
    tests per seed and eps."""
    tests = [t for c in columns for *_, t in paired_seeds(a, b, c) if t is not None]
    return (sum(t.significant and t.first > t.second for t in tests),
            sum(t.significant and t.second > t.first for t in tests), len(tests))


def aware_section(models, columns, fixed):
    """The section's lines (see the module); [] when no compressed model's lineage trained
    adversarially. ``fixed``: {attack: eps} the first table reads."""
    names = members(models)
    if not names:
        return []
    cols = list(fixed.items())
    out = ["## Adversarial-aware compression", "",
           "Compressed models by how adversarial training entered their making: inside the "
           "prune-retrain and fine-tune steps (adversarial-aware), after compression, or "
           "before it (an adversarially trained base), beside plain compression and the "
           "adversarially trained dense models; the attack each trained on; mean with its 95% "
           "interval (over seeds, or over test images with one seed: *).", "",
           markdown_table(["model", "adversarial training", "training attack", "ratio",
                           "clean"] + [column_label(c) for c in cols],
                          [[n, order_words(models[n]), training_attack(models[n]) or "–",
                            f"{_ratio(models[n]):.1f}×",
                            ci_text(cell_interval(models[n], ("clean", None)))]
                           + [ci_text(cell_interval(models[n], c)) for c in cols]
                           for n in names])]
    attack, _ = headline_attack(models, columns)
    pairs = rivals(models)
    if attack is None or not pairs:
        return out + ["", "No adversarial-aware model with a rival to test against"
                      + (" under a bounded white-box attack." if attack is None else ".")]
    head = [c for c in columns if c[0] == attack and c[1] is not None]
    found = [across(models[a], models[b], head) for a, b, _ in pairs]
    adjusted = iter(stats.holm([r["wilcoxon"].p for r in found if r is not None]))
    family = sum(r is not None for r in found)
    rows, better, worse = [], [], []
    for (a, b, relation), res in zip(pairs, found):
        if res is None:
            rows.append([a, b, relation, "–", "no cell both ran whose checks passed on both",
                         "–", "–", "–", "–"])
            continue
        adj, w = next(adjusted), res["wilcoxon"]
        mean = 100 * sum(res["diffs"]) / len(res["diffs"])
        up, down, tests = _mcnemar_counts(models[a], models[b], res["cells"])
        verdict = "not significant"
        if adj < stats.ALPHA:
            verdict = "aware more robust" if mean > 0 else "aware less robust"
            (better if mean > 0 else worse).append(f"{b} ({relation})")
        rows.append([a, b, relation, f"{mean:+.2f}",
                     f"{len(res['diffs'])} ({w.first}/{w.second}/{w.ties})",
                     f"{p_text(w.p)} / {p_text(adj)}", p_text(res["sign"].p),
                     f"{up}/{down} of {tests}" if tests else "–", verdict])
    most = max((len(r["diffs"]) for r in found if r is not None), default=0)
    floor = min(1.0, 2.0 ** (1 - most))  # the least p an exact test of ``most`` pairs gives
    out += ["", f"### Adversarial-aware compression against its rivals, {attack}", "",
            f"Robust accuracy under the headline attack ({attack}) over every eps and seed both "
            "models have (cells whose sanity checks failed left out): the mean difference "
            "(aware − rival, pp), the pairs (higher/lower/tied), the Wilcoxon signed-rank p "
            f"raw and Holm-adjusted over the {family} pair(s), the sign test's p, and McNemar's "
            "exact test per seed and eps (significant for aware / for the rival, uncorrected). "
            "Rivals: the other orders and the robust-pruning baselines on the same training "
            f"attack and plain compression, each at a ratio within {MATCHED:g}×, and the dense "
            "model trained on the same attack.", "",
            markdown_table(["aware model", "rival", "relation", "Δ robust (pp)",
                            "pairs (+/−/=)", "Wilcoxon p / Holm", "sign p", "McNemar",
                            "verdict"], rows), ""]
    if better or worse:
        words = ("In words: adversarial-aware compression is significantly more robust than "
                 f"{', '.join(better) or 'none of its rivals'}"
                 + (f", and significantly less robust than {', '.join(worse)}" if worse else "")
                 + f" (Holm-adjusted p < {stats.ALPHA:g} over the {family} pair(s)); the other "
                 "differences are not significant at this study's seeds and images.")
    else:
        words = ("In words: no difference between adversarial-aware compression and its rivals "
                 f"is significant (Holm-adjusted p < {stats.ALPHA:g} over the {family} "
                 "pair(s)) at this study's seeds and images.")
    if family and family * floor >= stats.ALPHA:
        words += (f" With at most {most} pairs per comparison and {family} comparisons, the "
                  f"smallest Holm-adjusted p possible is {min(1.0, family * floor):.3g}: more "
                  "seeds or eps are needed for a verdict.")
    return out + [words]
