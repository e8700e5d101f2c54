"""The design that separates the causes: at the same bytes on disk, Deep Compression of the
dense model, compact models trained from scratch, compact models compressed or stored with
8-bit weights; the stage ablation of Deep Compression (which stage brings the robustness?);
and whether robustness is just clean accuracy.

Each model's *method* (``method``) is how it was made small, read from its kind, its base's
kind (``model_info.parents``, base first), its compression stages (``model_info.
compression_stages``, else derived from its settings: ``compress.pipeline.stages_of``) and its
quantization method: the figures draw one curve per method, and the tables name each arm.
Robust accuracy is the headline attack's (``inference.headline_attack``) with its 95% intervals
(``inference.cell_interval``: over seeds, or with one seed over test images).
"""

import math

from ...compress.pipeline import STAGES, stages_of
from .. import stats
from ..config import COMPACT_KINDS, TRAINED_FROM_SCRATCH
from .headline import ci_text
from .inference import cell_interval, headline_attack
from .tables import MATCHED, column_label, file_size, markdown_table

BASED_KINDS = ("compressed", "quantized", "finetuned", "lowrank")  # made from a base model
STAGE_WORDS = {STAGES: "Deep Compression", ("prune",): "prune only",
               ("quantize",): "quantize only", ("prune", "quantize"): "prune + quantize"}


def base_of(m):
    """The model a compressed, quantized, fine-tuned or factorised one was made from (None
    for the others, or rows that did not record it)."""
    parents = m["info"].get("parents") or []
    return parents[0] if m["kind"] in BASED_KINDS and parents else None


def stages(m):
    """The compression stages a compressed model ran (a tuple of ``STAGES``); None for the
    other kinds."""
    if m["kind"] != "compressed":
        return None
    recorded = m["info"].get("compression_stages")
    return tuple(recorded) if recorded is not None else stages_of(m["settings"])


def code_widths(m):
    """The code bits of a compressed model's layers, as a sorted tuple of the distinct ones
    (those its ``code_bits`` gave, else its settings')."""
    bits = m["info"].get("bits") or m["settings"].get("bits") or {}
    return tuple(sorted(set(bits.values())))


def method(models, name):
    """How a model was made small, in words: its kind for the models trained as they are
    ("dense", "compact", …); for a model made from another, the base's kind and what was done
    to it ("dense: Deep Compression", "compact: int8", "dense: prune only")."""
    m = models[name]
    base = base_of(m)
    if m["kind"] not in ("compressed", "quantized") or base is None:
        return m["kind"]
    from_kind = models[base]["kind"] if base in models else "?"
    if m["kind"] == "quantized":
        done = (m["settings"].get("options") or {}).get("method", "quantized")
    else:
        st = stages(m)
        done = STAGE_WORDS.get(st, " + ".join(st) or "no stage")
        if st == ("quantize",) and len(code_widths(m)) == 1:
            done += f" ({code_widths(m)[0]}-bit)"
        pruning = m["settings"].get("pruning")
        if pruning and pruning != "magnitude" and "prune" in st:
            done += f" ({pruning} pruning)"
    adversarial = " (adversarial)" if m["info"].get("adversarial") else ""
    return f"{from_kind}: {done}{adversarial}"


def arm(models, name):
    """The design arm a model is, or "" ((a) Deep Compression of the dense model, (b) a
    compact model from scratch, (c) a compact model compressed, (d) a compact model with 8-bit
    weights: int8, or quantized only with 8-bit codes, (e) the dense model through some of the stages)."""
    m = models[name]
    if m["info"].get("adversarial"):
        return ""
    if m["kind"] in COMPACT_KINDS:  # a low-rank model is factorised, not trained small
        return "(b)" if m["kind"] in TRAINED_FROM_SCRATCH else ""
    base = base_of(m)
    from_kind = models[base]["kind"] if base in models else None
    if m["kind"] == "quantized" and from_kind in COMPACT_KINDS:
        return "(d)" if (m["settings"].get("options") or {}).get("method") == "int8" else "(c)"
    if m["kind"] != "compressed":
        return ""
    full = stages(m) == STAGES
    if from_kind == "dense":
        return "(a)" if full else "(e)"
    if from_kind not in COMPACT_KINDS:
        return ""
    return "(d)" if stages(m) == ("quantize",) and code_widths(m) == (8,) else "(c)"


def reference_dense(models):
    """The dense model the size reductions are measured against: the plain (never trained
    adversarially) dense model with the largest file, else any dense one; None without."""
    dense = [n for n, m in models.items() if m["kind"] == "dense"
             and m["info"].get("file_bytes")]
    plain = [n for n in dense if not models[n]["info"].get("adversarial")]
    found = plain or dense
    return max(found, key=lambda n: models[n]["info"]["file_bytes"]) if found else None


def size_reduction(models, name, reference=None):
    """How many times smaller than the reference dense model's file a model's file is (its
    own compression ratio when there is no reference); None without a size."""
    size = models[name]["info"].get("file_bytes")
    if reference is not None and size:
        return models[reference]["info"]["file_bytes"] / size
    return models[name]["info"].get("compression_ratio")


def byte_groups(models):
    """The models with a file size, grouped by it → [(anchor or None, [names])], each group
    sorted by size and the groups by their smallest file. Each Deep Compression model of a
    dense one (arm (a)) anchors a group, which every other model whose file is within
    ``MATCHED`` of its own joins (of the nearest anchor, on a log scale); the models no anchor
    takes are grouped among themselves: sorted by size, a group takes the next model while its
    file is within ``MATCHED`` of the group's smallest."""
    def size(n):
        return models[n]["info"]["file_bytes"]

    sized = sorted((n for n in models if models[n]["info"].get("file_bytes")), key=size)
    anchors = [n for n in sized if arm(models, n) == "(a)"]
    anchored, rest = {a: [a] for a in anchors}, []
    for n in sized:
        if n in anchored:
            continue
        near = min(anchors, key=lambda a: abs(math.log(size(n) / size(a))), default=None)
        if near is not None and abs(math.log(size(n) / size(near))) <= math.log(MATCHED):
            anchored[near].append(n)
        else:
            rest.append(n)
    groups = [(a, names) for a, names in anchored.items()]
    for n in rest:
        loose = [g for g in groups if g[0] is None]
        if loose and size(n) <= MATCHED * size(loose[-1][1][0]):
            loose[-1][1].append(n)
        else:
            groups.append((None, [n]))
    groups = [(a, sorted(names, key=size)) for a, names in groups]
    return sorted(groups, key=lambda g: size(g[1][0]))


def bits_per_weight(m):
    """The file's bits per weight of the architecture (its convolution and fully connected
    weights; all its parameters for rows that did not record them); None without a size."""
    info = m["info"]
    weights = info.get("weights") or info.get("params")
    return 8 * info["file_bytes"] / weights if info.get("file_bytes") and weights else None


def _count(v):
    return "–" if v is None else f"{v:,}"


def design_section(models, columns):
    """The arms grouped by matched bytes: file size, weights, bits per weight, clean and
    robust accuracy with 95% intervals under the headline attack at each eps; and how robust
    accuracy goes with clean accuracy across the models."""
    attack, _ = headline_attack(models, columns)
    head = [c for c in columns if c[0] == attack and c[1] is not None]
    out = ["## Design: arms at the same bytes", "",
           "Models grouped by file size: each Deep Compression model of a dense one (arm (a)) "
           f"heads a group of the models whose files are within {MATCHED:g}× of its own; the "
           f"others are grouped among themselves (files within {MATCHED:g}× of a group's "
           "smallest). Arms: (a) Deep Compression of the dense model; (b) compact models "
           "trained from scratch; (c) compact models compressed; (d) compact models with 8-bit "
           "weights (int8, or 8-bit codebooks); (e) the dense model through some of Deep Compression's stages. "
           "At the same bytes, (a) holds many more weights than (b): if (a) is more robust "
           "than (b) but not than (c) or (d), parameters, not compression, made the "
           "difference. Bits per weight: the file's bits over the architecture's convolution "
           "and fully connected weights. Accuracies in % with 95% intervals (over seeds; * "
           f"over test images with one seed){f', robust under {attack}' if attack else ''}."]
    rows = []
    for i, (anchor, group) in enumerate(byte_groups(models)):
        sizes = [models[n]["info"]["file_bytes"] for n in group]
        label = (f"{i + 1}: {anchor}'s" if anchor else
                 f"{i + 1}: {file_size(min(sizes))}" + (f" – {file_size(max(sizes))}"
                                                       if len(group) > 1 else ""))
        for n in group:
            m, bpw = models[n], bits_per_weight(models[n])
            rows.append([label, n, arm(models, n), method(models, n), base_of(m) or "–",
                         f"{m['info']['file_bytes']:,}", _count(m["info"].get("weights")),
                         _count(m["info"].get("nonzero_weights")),
                         "–" if bpw is None else f"{bpw:.3g}",
                         ci_text(cell_interval(m, ("clean", None)))]
                        + [ci_text(cell_interval(m, c)) for c in head])
    out += ["", markdown_table(["size group", "model", "arm", "method", "made from",
                                "file bytes", "weights", "non-zero weights", "bits per weight",
                                "clean"] + [column_label(c) for c in head], rows)
            if rows else "No model with a recorded file size."]
    return out + [""] + accuracy_sentence(models, head)


def accuracy_sentence(models, head):
    """Is it just accuracy? Spearman's rank correlation of clean and robust accuracy over the
    models (means over seeds) at each eps of the headline attack."""
    from scipy import stats as scipy_stats

    parts = []
    for c in head:
        pairs = [(stats.t_interval(m["clean"]), stats.t_interval(m["adv"].get(c, [])))
                 for m in models.values()]
        pairs = [(a.mean, b.mean) for a, b in pairs if a is not None and b is not None]
        if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
            continue
        rho, p = scipy_stats.spearmanr([a for a, _ in pairs], [b for _, b in pairs])
        parts.append(f"{column_label(c)}: ρ = {rho:+.2f} (p = {p:.2g}, {len(pairs)} models)")
    if not parts:
        return ["Clean against robust accuracy: too few models (3 or more with different "
                "accuracies) to correlate."]
    return ["Is it just accuracy? Spearman's rank correlation of clean and robust accuracy "
            "over the models: " + "; ".join(parts) + ". A strong positive ρ says the more "
            "accurate models are the more robust ones, whatever their size or method; the "
            "figure of robust against clean accuracy shows which models stand off the trend."]


def ablation_section(models, columns):
    """Deep Compression's stages one by one on the same dense model: the dense model, then
    each compressed model of it by the stages it ran; nothing when no compressed model of a
    dense one left out a stage."""
    attack, _ = headline_attack(models, columns)
    head = [c for c in columns if c[0] == attack and c[1] is not None]
    by_base = {}
    for n, m in models.items():
        base = base_of(m)
        if (m["kind"] == "compressed" and base in models and models[base]["kind"] == "dense"
                and not m["settings"].get("adversarial")):
            by_base.setdefault(base, []).append(n)
    if not any(stages(models[n]) != STAGES for names in by_base.values() for n in names):
        return []
    rows = []
    for base, names in by_base.items():
        names = sorted(names, key=lambda n: (len(stages(models[n])), stages(models[n]),
                                             models[n]["info"].get("compression_ratio") or 0))
        for n in [base] + names:
            m = models[n]
            st = stages(m)
            rows.append([n, "none (the base)" if st is None else
                         STAGE_WORDS.get(st, " + ".join(st) or "no stage"),
                         f"{m['info'].get('compression_ratio', 0):.1f}×",
                         file_size(m["info"].get("file_bytes", 0)),
                         ci_text(cell_interval(m, ("clean", None)))]
                        + [ci_text(cell_interval(m, c)) for c in head])
    return ["## Stage ablation: which stage brings the robustness?", "",
            "The dense model and its compressed versions by the stages they ran (pruning, "
            "k-means quantization, Huffman coding). Huffman coding is lossless: alone it would "
            "leave the dense model's function, so its row is the base's; on top of pruning and "
            "quantization it changes the bytes, not the weights, so prune + quantize and Deep "
            "Compression with the same settings and seed should score the same. "
            f"Accuracies in % with 95% intervals{f', robust under {attack}' if attack else ''}.",
            "", markdown_table(["model", "stages", "ratio", "file size", "clean"]
                               + [column_label(c) for c in head], rows)]

