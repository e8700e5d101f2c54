"""Compression: magnitude pruning (``prune``) and pruning sensitivity (``sensitivity``), trained
quantization (``quantize``), the Deep Compression pipeline with Huffman coding (``pipeline``),
a target compression ratio (``target``), the compressed model file (``modelfile``), size
accounting (``report``), knowledge distillation (``distill``), low-rank factorisation
(``lowrank``), and the pruning methods that can replace magnitude pruning in the pipeline
(``pruning_methods``: Optimal Brain Damage ``obd``, Dynamic Network Surgery ``dns``, ``hydra``,
``admm``).

The public names of these modules are attributes of this package, loaded on first use (so
``import robustcnn.compress`` stays cheap): ``compress.compress``, ``compress.save_model``,
``compress.factorise`` … ``prune``, ``quantize``, ``sensitivity`` and ``distill`` are the
modules; each has a function of its own name, e.g. ``compress.prune.prune(net, {"ip1": 0.9})``.
The pipeline trains with the objective its caller passes and imports nothing from the attacks.
"""

from .._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "pipeline": ("compress", "CompressionSettings", "PRESETS", "PAPER_PRESETS", "preset"),
    "prune": ("prune_layer", "magnitude_mask"),
    "quantize": ("quantize_layer", "kmeans_1d", "init_centroids"),
    "sensitivity": ("suggest_kept", "format_sensitivity", "sensitivity_csv", "plot_sensitivity",
                    "prunable_layers", "accuracy_curve"),
    "target": ("settings_for_ratio", "settings_for_bytes", "estimate_file_bytes",
               "trial_file_bytes"),
    "modelfile": ("save_model", "load_model", "is_model_file", "read_model_file"),
    "report": ("layer_table", "format_layer_table", "dense_parameter_bytes"),
    "distill": ("DistillationObjective", "distillation_loss"),
    "lowrank": ("factorise", "ranks_for_ratio"),
    "pruning_methods": ("PRUNING_METHODS", "pruning_method"),
    "obd": ("hessian_diagonal", "saliency", "obd_prune"),
    "dns": ("DNSObjective",),
    "hydra": ("optimise_scores",),
    "admm": ("ADMMObjective",),
}, submodules=("pipeline", "prune", "quantize", "sensitivity", "target", "modelfile", "report",
               "distill", "lowrank", "pruning_methods", "obd", "dns", "hydra", "admm"))

del lazy_exports
