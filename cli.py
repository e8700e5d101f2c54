"""The ``robustcnn`` command (also ``python -m robustcnn``).

    robustcnn train   --model lenet5 --epochs 15 -o runs/lenet5.h5
    robustcnn eval    runs/lenet5.h5
    robustcnn attack  runs/lenet5.h5 --attack fgsm --eps 0.05,0.1,0.2
    robustcnn info    runs/lenet5.h5
    robustcnn compress runs/lenet5.h5 -o runs/lenet5.rcnn   (Deep Compression's LeNet settings)
    robustcnn demo    (train LeNet-5 on Fashion-MNIST, then attack it with FGSM)

Model files are HDF5 checkpoints (train's output) or compressed ``.rcnn`` files; every command
that reads a model takes either.
"""

import argparse
import json
import os
import sys
import time

# The demo's recipe (and train's defaults). On Fashion-MNIST, LeNet-5 with seed 0 reached 91.87%
# test accuracy after 15 epochs without augmentation and 91.20% with random shifts and mirroring
# (which slow convergence); 12 epochs keep the demo short.
DEMO = dict(model="lenet5", dataset="fashion-mnist", epochs=12, batch_size=64, lr=0.02,
            momentum=0.9, weight_decay=5e-4, schedule="cosine", augment=False, seed=0)
DEMO_EPS = (0.05, 0.1, 0.2)


def _data_args(p):
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or mnist")
    p.add_argument("--data-dir", default=None,
                   help="directory with the IDX files (default: $ROBUSTCNN_DATA, then "
                        "/usr/share/datasets/<dataset>)")


def _train_args(p, defaults):
    p.add_argument("--model", default=defaults["model"], help="lenet5 or lenet-300-100")
    p.add_argument("--epochs", type=int, default=defaults["epochs"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    p.add_argument("--lr", type=float, default=defaults["lr"], help="base learning rate")
    p.add_argument("--momentum", type=float, default=defaults["momentum"])
    p.add_argument("--weight-decay", type=float, default=defaults["weight_decay"])
    p.add_argument("--schedule", choices=("cosine", "step", "constant"),
                   default=defaults["schedule"])
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   default=defaults["augment"], help="random shifts (±2 px) and mirroring")
    p.add_argument("--seed", type=int, default=defaults["seed"])
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file: saved every epoch, resumed from if it exists")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _parser():
    parser = argparse.ArgumentParser(
        prog="robustcnn", description="Train, evaluate and attack CNNs with the robustcnn engine.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model of the zoo")
    _train_args(p, DEMO)
    _data_args(p)
    p.add_argument("-o", "--out", default=None, help="model file to write (default runs/<model>.h5)")

    p = sub.add_parser("eval", help="clean test accuracy of a model file")
    p.add_argument("model")
    _data_args(p)

    p = sub.add_parser("attack", help="accuracy under attack, per eps")
    p.add_argument("model")
    p.add_argument("--attack", default="fgsm", help="attack name (fgsm)")
    p.add_argument("--eps", default=",".join(map(str, DEMO_EPS)), help="comma-separated eps list")
    p.add_argument("--limit", type=int, default=None, help="attack only the first N test images")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    _data_args(p)

    p = sub.add_parser("info", help="architecture, per-layer sizes and metadata of a model file")
    p.add_argument("model")

    p = sub.add_parser("compress", help="prune, quantize and Huffman-code a trained model")
    p.add_argument("model")
    p.add_argument("-o", "--out", required=True, help="compressed model file to write (.rcnn)")
    p.add_argument("--preset", default=None,
                   help="Deep Compression's settings for lenet5 or lenet-300-100 (default: the "
                        "model's own name)")
    p.add_argument("--prune", default=None, metavar="LAYER=SPARSITY,…",
                   help="fraction of weights to remove per layer (overrides the preset)")
    p.add_argument("--bits", default=None, metavar="LAYER=BITS,…",
                   help="code bits per layer (overrides the preset)")
    p.add_argument("--gap-bits", default=None, metavar="LAYER=BITS,…",
                   help="relative-index bits per layer (overrides the preset)")
    p.add_argument("--rounds", type=int, default=None, help="pruning rounds")
    p.add_argument("--retrain-epochs", type=int, default=None, help="epochs after each round")
    p.add_argument("--finetune-epochs", type=int, default=None, help="centroid fine-tuning epochs")
    p.add_argument("--lr", type=float, default=None, help="retraining learning rate")
    p.add_argument("--huffman", action=argparse.BooleanOptionalAction, default=True,
                   help="Huffman-code the codes and relative indices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    _data_args(p)

    p = sub.add_parser("demo", help="train LeNet-5 on Fashion-MNIST, then attack it with FGSM")
    _data_args(p)
    p.add_argument("--out", default=os.path.join("runs", "demo-lenet5.h5"))
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def _eps_list(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--eps must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError("--eps is empty")
    return values


def _train(args, out):
    from .engine.augment import RandomShiftFlip
    from .engine.checkpoint import save_checkpoint
    from .engine.train import SGD, Schedule, fit
    from .models.datasets import load_dataset
    from .models.lenet import build_model

    x, y = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    xt, yt = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    net = build_model(args.model, seed=args.seed)
    print(f"{args.model} on {args.dataset}: {len(x)} training and {len(xt)} test images, "
          f"{net.num_params():,} parameters")
    steps = len(x) // args.batch_size
    schedule = Schedule(args.schedule, args.lr, total=args.epochs * steps,
                        step_size=max(args.epochs * steps // 3, 1), warmup=steps // 2)
    t0 = time.perf_counter()
    history = fit(net, x, y, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer=SGD(args.momentum, args.weight_decay), schedule=schedule,
                  seed=args.seed, augment=RandomShiftFlip(2) if args.augment else None,
                  val=(xt, yt), checkpoint=args.checkpoint, progress=args.progress)
    seconds = time.perf_counter() - t0
    accuracy = net.accuracy(xt, yt)
    meta = {"dataset": args.dataset, "model": args.model, "test_accuracy": accuracy,
            "train_seconds": seconds, "history": history,
            "settings": {k: v for k, v in vars(args).items() if k not in ("progress",)}}
    save_checkpoint(out, net, meta=meta)
    print(f"trained in {seconds:.1f} s; model written to {out}")
    print(f"clean test accuracy: {100 * accuracy:.2f}%")
    return net, xt, yt


def _attack(net, xt, yt, attack, eps, limit=None, json_path=None):
    from .attacks import ATTACKS, format_table, robustness_table

    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: {sorted(ATTACKS)}")
    if limit is not None:
        xt, yt = xt[:limit], yt[:limit]
    t0 = time.perf_counter()
    rows = robustness_table(net, xt, yt, eps, attack=ATTACKS[attack])
    print(f"{attack} on {len(xt)} test images ({time.perf_counter() - t0:.1f} s), true labels, "
          f"pixels in [0, 1]:")
    print(format_table(rows))
    if json_path:
        from .atomic import atomic_path

        with atomic_path(json_path) as tmp:
            with open(tmp, "w") as f:
                json.dump(rows, f, indent=2)
    return rows


def _pairs(text, kind, option):
    """'a=1,b=2' → {"a": kind("1"), "b": kind("2")}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            out[name] = kind(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"{option} takes LAYER=VALUE pairs, got {item!r}")
    return out


def load_model_file(path):
    """(net, meta) from a compressed .rcnn file or an HDF5 checkpoint."""
    from .compress.modelfile import is_model_file, load_model
    from .engine.checkpoint import load_net

    return load_model(path) if is_model_file(path) else load_net(path)


def _compress(args):
    from .compress.modelfile import save_model
    from .compress.pipeline import CompressionSettings, PRESETS, compress
    from .compress.report import dense_parameter_bytes, format_layer_table, layer_table
    from .models.datasets import load_dataset

    net, meta = load_model_file(args.model)
    name = args.preset or meta.get("model") or net.name
    base = dict(PRESETS.get(name, {"kept": {}, "bits": {}, "gap_bits": {}}))
    if args.prune:
        base["kept"] = {k: 1.0 - v for k, v in _pairs(args.prune, float, "--prune").items()}
    if args.bits:
        base["bits"] = _pairs(args.bits, int, "--bits")
    if args.gap_bits:
        base["gap_bits"] = _pairs(args.gap_bits, int, "--gap-bits")
    if not base["kept"] and not base["bits"]:
        raise ValueError(f"no preset for {name!r} (presets: "
                         f"{sorted(PRESETS)}); give --prune and/or --bits")
    overrides = {k: v for k, v in (("rounds", args.rounds), ("retrain_epochs", args.retrain_epochs),
                                   ("finetune_epochs", args.finetune_epochs), ("lr", args.lr))
                 if v is not None}
    settings = CompressionSettings(**base, **overrides, huffman=args.huffman, seed=args.seed)
    dataset = meta.get("dataset", args.dataset) if args.dataset == "fashion-mnist" else args.dataset
    x, y = load_dataset(dataset, "train", data_dir=args.data_dir)
    xt, yt = load_dataset(dataset, "test", data_dir=args.data_dir)
    print(f"compressing {args.model} ({name}) on {dataset}")
    t0 = time.perf_counter()
    report = compress(net, x, y, settings, val=(xt, yt), progress=args.progress)
    seconds = time.perf_counter() - t0
    accuracy = report["stages"][-1]["accuracy"]
    size = save_model(args.out, net, meta={
        "model": name, "dataset": dataset, "test_accuracy": accuracy,
        "dense_test_accuracy": report["stages"][0]["accuracy"], "compress_seconds": seconds,
        "stages": report["stages"], "settings": report["settings"], "source": args.model})
    print(format_layer_table(layer_table(net), file_bytes=size,
                             dense_bytes=dense_parameter_bytes(net)))
    print(f"compressed in {seconds:.1f} s; written to {args.out}")
    print(f"test accuracy: dense {100 * report['stages'][0]['accuracy']:.2f}%, "
          f"compressed {100 * accuracy:.2f}%")


def _info(path):
    import os as _os

    from .compress.report import dense_parameter_bytes, format_layer_table, layer_table

    net, meta = load_model_file(path)
    print(net.summary())
    print()
    print(format_layer_table(layer_table(net), file_bytes=_os.path.getsize(path),
                             dense_bytes=dense_parameter_bytes(net)))
    shown = {k: v for k, v in meta.items() if k not in ("history", "stages", "settings")}
    print(json.dumps(shown, indent=2, default=str))


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"robustcnn {args.command}: error: {e}", file=sys.stderr)
        return 2


def _run(args):
    if args.command == "train":
        _train(args, args.out or os.path.join("runs", f"{args.model}.h5"))
    elif args.command == "info":
        _info(args.model)
    elif args.command == "compress":
        _compress(args)
    elif args.command in ("eval", "attack"):
        net, meta = load_model_file(args.model)
        from .models.datasets import load_dataset

        xt, yt = load_dataset(args.dataset, "test", data_dir=args.data_dir)
        if args.command == "eval":
            print(f"clean test accuracy: {100 * net.accuracy(xt, yt):.2f}%")
        else:
            _attack(net, xt, yt, args.attack, _eps_list(args.eps), args.limit, args.json)
    elif args.command == "demo":
        t0 = time.perf_counter()
        demo = argparse.Namespace(**DEMO, checkpoint=None, progress=args.progress,
                                  data_dir=args.data_dir)
        demo.dataset = args.dataset
        net, xt, yt = _train(demo, args.out)
        _attack(net, xt, yt, "fgsm", DEMO_EPS)
        print(f"demo wall time: {time.perf_counter() - t0:.1f} s")
        print(f"clean test accuracy: {100 * net.accuracy(xt, yt):.2f}%")
    return 0
