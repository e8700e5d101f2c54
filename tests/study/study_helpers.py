"""What the study tests share: tiny synthetic IDX data and a tiny grid that runs in seconds."""

from helpers import write_tiny_mnist  # noqa: F401  (the study tests' data, as the CLI's)


def tiny_config(data_dir, *, compact="lenet5", seeds=(0,), sanity=False):
    """A parsed-TOML dict: LeNet-300-100 dense and compressed (one short round), a compact
    model; FGSM and PGD at two eps; 32 attacked images; two short epochs of training."""
    compact_model = {"name": "compact", "kind": "compact", "arch": compact}
    if compact == "mobilenet_small":
        compact_model["kwargs"] = {"alpha": 0.25}
    return {
        "study": {"name": "tiny", "dataset": "mnist", "data_dir": str(data_dir),
                  "seeds": list(seeds), "test_examples": 32, "sanity": sanity,
                  "sanity_examples": 16, "batch_size": 32},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        "models": [
            {"name": "dense", "kind": "dense", "arch": "lenet-300-100"},
            {"name": "dc", "kind": "compressed", "base": "dense", "preset": "lenet-300-100",
             "settings": {"rounds": 1, "retrain_epochs": 1, "finetune_epochs": 1,
                          "batch_size": 16}},
            compact_model,
        ],
        "attacks": [{"name": "fgsm", "eps": [0.05, 0.2]}, {"name": "pgd", "eps": [0.05, 0.2]}],
    }
