"""The ``robustcnn`` command (also ``python -m robustcnn``).

    robustcnn train   --model lenet5 --epochs 15 -o runs/lenet5.h5
    robustcnn eval    runs/lenet5.h5
    robustcnn attack  runs/lenet5.h5 --attack fgsm,bim,pgd,deepfool --eps 0.05,0.1,0.2
    robustcnn info    runs/lenet5.h5
    robustcnn predict SqueezeNet_deploy.prototxt --weights compressed_SqueezeNet.net cat.jpg
    robustcnn compress runs/lenet5.h5 -o runs/lenet5.rcnn   (Deep Compression's LeNet settings)
    robustcnn compress runs/lenet5.h5 -o runs/lenet5-int8.rcnn --method int8   (or ttq, inq, binary, …)
    robustcnn sensitivity runs/lenet5.h5 --plot runs/sensitivity.png   (to choose sparsities)
    robustcnn demo    (train LeNet-5 on Fashion-MNIST, then attack it with FGSM)
    robustcnn study  study.toml --db runs/study.sqlite   (a grid of models × attacks × eps)
    robustcnn report runs/study.sqlite -o runs/study-report   (CSV and Markdown)
    robustcnn certify runs/lenet5.rcnn --method crown-ibp --eps 0.01,0.1   (certified accuracy)

Every command that reads a model takes any file ``robustcnn.load`` reads, told apart by content:
HDF5 checkpoints (train's output), compressed ``.rcnn`` files, Keras ``.h5``, ONNX, and Caffe
``.prototxt`` nets with ``--weights`` (``.caffemodel``, Caffe HDF5 or a Deep Compression ``.net``);
what its images are (``--bounds``, ``--mean``, ``--std``, ``--scale``, ``--channel-order``,
``--input-shape``) comes from the file or the command line. Every command that reads data takes
``--limit N`` (the first N images of each split it reads). Model files are read up to
``--max-model-bytes`` (``robustcnn.limits``, default 512M).

One error path: a failure caused by the input (a file, an option, the data) ends the command
with one line on stderr, ``robustcnn <command>: error: <file or option>: <what is wrong>``, and
exit status 2; options and output paths are checked before any work starts. Anything else is
an internal error and shows its traceback.
"""

import argparse
import json
import math
import os
import sys
import time

# `robustcnn train`'s defaults (the study's [train] defaults too). On Fashion-MNIST, LeNet-5
# with seed 0 reached 91.87% test accuracy after 15 epochs without augmentation and 91.20% with
# random shifts and mirroring (which slow convergence); 12 epochs keep training short.
DEMO = dict(model="lenet5", dataset="fashion-mnist", epochs=12, batch_size=64, lr=0.02,
            momentum=0.9, weight_decay=5e-4, schedule="cosine", augment=False, seed=0)
DEMO_EPS = (0.05, 0.1, 0.2)


def _data_args(p):
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (default), mnist, cifar-10 (its binary version) or digits "
                        "(scikit-learn's handwritten digits at 28x28; no files: robustcnn[digits])")
    p.add_argument("--data-dir", default=None,
                   help="directory with the dataset's files (default: $ROBUSTCNN_DATA, then "
                        "/usr/share/datasets/<dataset>)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N images of each split the command reads")


def _model_args(p):
    p.add_argument("model", help="a model file of any format robustcnn reads (.rcnn, HDF5 "
                                 "checkpoint, Keras .h5, ONNX, Caffe .prototxt), told apart by "
                                 "its content")
    p.add_argument("--weights", default=None,
                   help="for a Caffe .prototxt: its weights (.caffemodel, Caffe HDF5 or a Deep "
                        "Compression .net file)")
    p.add_argument("--max-model-bytes", default=None, metavar="BYTES",
                   help="the most the model's files may make robustcnn allocate, e.g. 1G "
                        "(default 512M: raise it for models larger than AlexNet)")
    _model_input_args(p)


def _model_input_args(p):
    """What the model's images are, where its file does not say (or to say otherwise)."""
    g = p.add_argument_group(
        "the model's input", "what its images are, where the file does not say it (a Caffe data "
        "layer, ONNX metadata, a robustcnn file) or says otherwise: input = (image[order] − "
        "mean) / std · scale; the dataset's [0, 1] images are mapped onto --bounds, in whose "
        "units eps is")
    g.add_argument("--bounds", default=None, metavar="LOW,HIGH",
                   help="the images' range, e.g. 0,255; per channel LOW1,LOW2,LOW3:HIGH1,HIGH2,"
                        "HIGH3 (default: the file's, else 0,1)")
    g.add_argument("--mean", default=None, metavar="M[,M…]", help="mean per channel (or one)")
    g.add_argument("--std", default=None, metavar="S[,S…]", help="std per channel (or one)")
    g.add_argument("--scale", type=float, default=None, help="a factor after the mean and std "
                                                             "(Caffe's scale)")
    g.add_argument("--channel-order", choices=("rgb", "bgr"), default=None,
                   help="the order the model wants the channels in (images are RGB)")
    g.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="the model's input shape: for symbolic ONNX dims, a Caffe data layer, "
                        "or another image size for a fully convolutional model")


def _output_arg(p):
    p.add_argument("--output", default=None, metavar="NAME",
                   help="the output (blob) to evaluate or attack, for a net with several "
                        "(info lists them; default: the model's first)")


def _with_output(net, args, labels):
    """``net`` with --output as its output (``Net.with_output``), checked against the labels
    (ValueError naming --output); the net itself without --output."""
    if args.output is None:
        return net
    try:
        net = net.with_output(args.output)
    except ValueError as e:
        raise ValueError(f"--output {args.output}: {e} (the net's outputs: "
                         f"{', '.join(net.outputs)})") from None
    if len(labels) and int(labels.max()) >= net.num_classes:
        raise ValueError(f"--output {args.output}: {net.num_classes} values per example, but "
                         f"{args.dataset}'s labels go up to {int(labels.max())}")
    return net


def _train_args(p, defaults):
    p.add_argument("--model", default=defaults["model"],
                   help="the architecture to train: lenet5 (default), lenet-300-100, "
                        "lenet-300-100-structured (circulant or Toeplitz-like hidden layers: "
                        "--arch-options structure=circulant, or rank=R), squeezenet_small, mobilenet_small (any image size), or an ImageNet one "
                        "(alexnet, vgg16, googlenet, squeezenet_v1_0, mobilenet_v1, …: their "
                        "own image sizes); see --from for a model file's")
    p.add_argument("--from", dest="from_file", default=None, metavar="MODEL_FILE",
                   help="train the model in this file (any format robustcnn reads): fine-tune "
                        "its weights, or with --reinit its architecture from scratch")
    p.add_argument("--weights", default=None, help="with --from a Caffe .prototxt: its weights")
    p.add_argument("--reinit", action="store_true",
                   help="with --from: draw new initial weights (train the architecture)")
    p.add_argument("--arch-options", default=None, metavar="KEY=VALUE,…",
                   help="the architecture's own options, e.g. width=0.5 or alpha=0.25,blocks=5")
    p.add_argument("--params", type=int, default=None,
                   help="build squeezenet_small / mobilenet_small at the width that gives about "
                        "this many parameters")
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
    p.add_argument("--extend", action="store_true",
                   help="with --checkpoint of a finished run: go on to --epochs (more epochs)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _demo(args):
    """``robustcnn study`` and ``robustcnn report`` on the packaged demo grid, then the
    headline table and where the report is."""
    from importlib import resources

    from .study.config import load_config
    from .study.report import headline_section, write_report
    from .study.runner import run_study

    t0 = time.perf_counter()
    config = args.config or resources.files("robustcnn.study") / "examples" / "demo.toml"
    study = load_config(config)
    if args.data_dir:
        study.data_dir = args.data_dir
    result = run_study(study, args.db, progress=args.progress, scheduler=args.scheduler,
                       estimate=True)
    out = os.path.join(os.path.dirname(args.db) or ".", "report")
    paths = write_report(args.db, out)
    with open(paths[1]) as f:
        print(headline_section(f.read()))
    print(f"{result['written']} cell(s) run now, {result['done_before']} found done; demo wall "
          f"time {time.perf_counter() - t0:.1f} s")
    print(f"report: {paths[1]} (figures and cells.csv beside it)")


def _parser():
    from .compress.methods import METHODS

    parser = _Parser(
        prog="robustcnn", description="Train, evaluate and attack CNNs with the robustcnn engine.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model of the zoo or of a model file")
    _train_args(p, DEMO)
    _data_args(p)
    p.add_argument("-o", "--out", default=None, help="model file to write (default runs/<model>.h5)")

    p = sub.add_parser("eval", help="clean test accuracy of a model file")
    _model_args(p)
    _output_arg(p)
    _data_args(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")

    p = sub.add_parser("attack", help="accuracy under attack per attack and eps, the worst case, "
                                      "sanity checks")
    _model_args(p)
    _output_arg(p)
    # The names of attacks.registry, written out so that --help loads no attack (a test checks
    # that every name and alias is here, in its group).
    p.add_argument("--attack", default="fgsm",
                   help="comma-separated attacks (default fgsm): bounded ones run at every eps: "
                        "fgsm, fgm-l2, bim, illc, pgd (= pgd-linf), pgd-l2, noise (= noise-linf), "
                        "noise-l2, apgd-ce-linf (= apgd-ce = apgd), apgd-ce-l2, apgd-dlr-linf "
                        "(= apgd-dlr), apgd-dlr-l2, apgd-t-linf (= apgd-t), apgd-t-l2, "
                        "square-linf (= square), square-l2, spsa, autoattack-linf (= autoattack "
                        "= aa; --version), autoattack-l2; unbounded ones run once, without eps, "
                        "and report the sizes of their perturbations: deepfool, cw (= "
                        "carlini-wagner = cw-l2), jsma, lbfgs, fab-linf (= fab), fab-l2, "
                        "fab-t-linf (= fab-t), fab-t-l2, hsj-l2 (= hsj = hopskipjump), hsj-linf")
    p.add_argument("--eps", default=",".join(map(str, DEMO_EPS)),
                   help="comma-separated radii in each attack's norm, in the units of the "
                        "images (--bounds; [0, 1] unless the model says) (default: "
                        "%(default)s)")
    p.add_argument("--json", default=None,
                   help="write rows, worst case and sanity checks as JSON here")
    p.add_argument("--csv", default=None, help="write the rows (and the worst case) as CSV here")
    p.add_argument("--plot", default=None,
                   help="accuracy-vs-eps plot (PNG) here; needs matplotlib (robustcnn[plot])")
    p.add_argument("--bpda", action="store_true",
                   help="attack through quantized activations with the straight-through "
                        "gradient (BPDA, Athalye et al. 2018)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts and the noise")
    p.add_argument("--sanity-examples", type=int, default=256,
                   help="examples the sanity checks attack themselves where they need an attack "
                        "or eps that was not asked for (default 256)")
    p.add_argument("--version", choices=("standard", "plus", "rand"), default="standard",
                   help="AutoAttack's version: standard (APGD-CE, APGD-T, FAB-T, Square), plus "
                        "(restarts, APGD-DLR, FAB), rand (EOT, for random nets)")
    p.add_argument("--no-sanity", dest="sanity", action="store_false",
                   help="skip the sanity checks (Carlini et al. 2019): faster, unchecked")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    p.add_argument("--defence", choices=("squeeze",), default=None,
                   help="also report how a detector does on the adversarial examples: squeeze = "
                        "feature squeezing (Xu et al. 2018: bit depth 1, median 2x2 and 3x3, "
                        "threshold at 5%% false positives on the first 10,000 training images)")
    _data_args(p)

    p = sub.add_parser("certify", help="certified accuracy within radii: IBP or CROWN-IBP (L∞) "
                                       "or randomized smoothing (L2), on the weights as stored")
    _model_args(p)
    p.add_argument("--method", choices=("ibp", "crown-ibp", "smoothing"), default="ibp",
                   help="ibp (Gowal et al. 2018), crown-ibp (Zhang et al. 2020) or smoothing "
                        "(Cohen et al. 2019)")
    p.add_argument("--eps", default=None,
                   help="comma-separated radii in pixel units of [0, 1]: L∞ for ibp and "
                        "crown-ibp (default 0.01,0.02,0.05,0.1), L2 for smoothing (default "
                        "0,0.25,0.5,0.75,1)")
    p.add_argument("--sigma", type=float, default=None,
                   help="smoothing: the Gaussian noise's standard deviation (required)")
    p.add_argument("--n0", type=int, default=100, help="smoothing: votes that pick the class")
    p.add_argument("--n", type=int, default=10_000,
                   help="smoothing: votes that bound its probability (default 10,000)")
    p.add_argument("--alpha", type=float, default=0.001,
                   help="smoothing: 1 − confidence of each certificate (default 0.001)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per bound pass (default 64), or noisy copies per forward "
                        "pass for smoothing (default 1000)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="arithmetic of the bounds (default float64: rounding cannot matter)")
    p.add_argument("--seed", type=int, default=0, help="smoothing: seed of the noise")
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.add_argument("--csv", default=None, help="write the rows as CSV here")
    p.add_argument("--plot", default=None,
                   help="certified accuracy vs radius (PNG) here; needs matplotlib")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    _data_args(p)

    p = sub.add_parser("predict", help="the most probable classes of image files")
    _model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (any format Pillow reads: robustcnn[images]), resized, "
                        "cropped and normalised as the model's preprocessing says")
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="how many classes to print per image (default %(default)s)")

    p = sub.add_parser("info", help="architecture, per-layer sizes and metadata of a model file")
    _model_args(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (architecture, outputs, input, sizes, "
                        "metadata) instead of the tables")

    p = sub.add_parser("compress", help="prune, quantize and Huffman-code a trained model, or "
                                        "compress it by another method (--method)")
    _model_args(p)
    p.add_argument("-o", "--out", required=True, help="compressed model file to write (.rcnn)")
    p.add_argument("--method", default="deep-compression",
                   choices=["deep-compression"] + sorted(METHODS),
                   help="deep-compression (default: prune, quantize, Huffman-code); "
                        + "; ".join(f"{m.name}: {m.paper}" for m in METHODS.values()))
    p.add_argument("--options", default=None, metavar="KEY=VALUE,…",
                   help="the method's own options: "
                        + "; ".join(f"{m.name}: " + ", ".join(f"{k} (default {v})" for k, v in
                                                              m.defaults.items())
                                    for m in METHODS.values()))
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs of a method that trains (--method)")
    p.add_argument("--activation-bits", type=int, default=None, metavar="BITS",
                   help="with --method binary: 1 (binary activations, XNOR-popcount kernels) "
                        "or 2..8 (k-bit); default float activations")
    p.add_argument("--preset", default=None,
                   help="lenet5 or lenet-300-100 (the defaults, tuned on Fashion-MNIST), or "
                        "lenet5-paper / lenet-300-100-paper (Deep Compression's published "
                        "settings); default: the model's own name")
    p.add_argument("--prune", default=None, metavar="LAYER=SPARSITY,…",
                   help="fraction of weights to remove per layer, in [0, 1) (replaces the "
                        "preset's for these layers; the others keep the preset's)")
    p.add_argument("--bits", default=None, metavar="LAYER=BITS,… or BITS",
                   help="code bits per layer, 1 to 8 (over the preset's, layer by layer); "
                        "with --method, the method's bits option")
    p.add_argument("--gap-bits", default=None, metavar="LAYER=BITS,…",
                   help="relative-index bits per layer, 1 to 8 (over the preset's, layer by "
                        "layer)")
    p.add_argument("--rounds", type=int, default=None, help="pruning rounds")
    p.add_argument("--retrain-epochs", type=int, default=None, help="epochs after each round")
    p.add_argument("--finetune-epochs", type=int, default=None, help="centroid fine-tuning epochs")
    p.add_argument("--lr", type=float, default=None, help="retraining learning rate")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="centroid fine-tuning learning rate")
    p.add_argument("--huffman", action=argparse.BooleanOptionalAction, default=True,
                   help="entropy-code the codes and relative indices (--entropy)")
    p.add_argument("--entropy", choices=("huffman", "rans", "cm"), default="huffman",
                   help="the entropy coder of the codes and relative indices: Huffman (Deep "
                        "Compression's), rANS (static frequencies per stream) or cm (an "
                        "adaptive arithmetic coder with context mixing)")
    # The names of compress.pruning_methods.PRUNING_METHODS, written out so that --help
    # imports nothing (a test checks that they agree).
    p.add_argument("--pruning", default="magnitude",
                   help="the pruning method, followed by quantization and Huffman coding as "
                        "the settings say: magnitude (Deep Compression's, the default), obd "
                        "(Optimal Brain Damage), dns (Dynamic Network Surgery), hydra, admm")
    p.add_argument("--pruning-options", default=None, metavar="KEY=VALUE,…",
                   help="the pruning method's own options, as KEY=VALUE pairs or a JSON object "
                        "(e.g. dns: c_rate=3,epochs=4; hydra: score_epochs=2)")
    p.add_argument("--adversarial", default=None, metavar="KEY=VALUE,…",
                   help="adversarial-aware compression: every retraining and fine-tuning "
                        "step on adversarial examples, e.g. attack=pgd,eps=0.1,fraction=1,"
                        "steps=7 or objective=trades,eps=0.1,beta=6,steps=10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    _data_args(p)

    p = sub.add_parser("sensitivity",
                       help="accuracy with each layer pruned on its own, per sparsity")
    _model_args(p)
    p.add_argument("--layers", default=None, help="comma-separated layer names (default: all "
                                                  "with a weight)")
    p.add_argument("--sparsities", default="0.5,0.7,0.8,0.9,0.95,0.98",
                   help="comma-separated fractions of each layer's weights to remove")
    p.add_argument("--holdout", type=int, default=10_000,
                   help="measure on the last N training images, which a model trained with "
                        "them has seen (0: on the test set)")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="suggest per-layer kept shares within this accuracy drop (0.01 = 1 pp)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--csv", default=None, help="also write the rows as CSV here")
    p.add_argument("--plot", default=None, help="also plot accuracy vs sparsity to this PNG")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    _data_args(p)

    p = sub.add_parser("demo", help="the small study on Fashion-MNIST: dense, compressed, "
                                    "compact and adversarial-aware models under FGSM and PGD; "
                                    "ends with the headline table and the report's path")
    p.add_argument("--data-dir", default=None,
                   help="directory with Fashion-MNIST's IDX files (default: $ROBUSTCNN_DATA, "
                        "then /usr/share/datasets/fashion-mnist)")
    p.add_argument("--db", default=os.path.join("runs", "demo", "study.sqlite"),
                   help="results database (default runs/demo/study.sqlite); rerunning resumes")
    p.add_argument("--config", default=None,
                   help="another study file instead of the packaged study/examples/demo.toml")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the cells on a Dask distributed cluster")
    p.add_argument("--no-progress", dest="progress", action="store_false")

    p = sub.add_parser("study", help="run a study grid (models × attacks × eps × seeds) into an "
                                     "SQLite database; reruns skip finished cells")
    p.add_argument("config", help="the study's TOML file (a documented example ships in the "
                                  "package: study/examples/demo.toml and paper.toml)")
    p.add_argument("--db", default=os.path.join("runs", "study.sqlite"),
                   help="results database (default runs/study.sqlite); models are cached beside it")
    p.add_argument("--limit", type=int, default=None, help="run at most N missing cells")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the model builds and cells on this Dask distributed scheduler's "
                        "workers (pip install robustcnn[distributed]); the database stays here")
    p.add_argument("--no-progress", dest="progress", action="store_false")

    p = sub.add_parser("report", help="CSV and Markdown report of a study database")
    p.add_argument("db")
    p.add_argument("-o", "--out", default=None,
                   help="directory to write cells.csv and report.md (default: <db>-report)")
    return parser


def _eps_list(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--eps must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError("--eps is empty")
    bad = [v for v in values if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise ValueError(f"--eps must be finite numbers >= 0, got {bad[0]!r}")
    return values


def _limited(x, y, limit):
    """The first ``limit`` examples (all when None); --limit must be >= 1."""
    if limit is None:
        return x, y
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    return x[:limit], y[:limit]


def _options(text, option):
    """'a=1,b=x' → {"a": 1, "b": "x"}: numbers where they parse, else strings."""
    out = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} takes KEY=VALUE pairs, got {item!r}")
        for kind in (int, float):
            try:
                out[key.strip()] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[key.strip()] = value.strip()
    return out


def _training_net(args, x, classes):
    """(net, name, meta of its file) of ``train``: a fresh architecture, or a model file's net
    (fine-tuned, or with --reinit its architecture freshly initialised)."""
    from .models.architectures import fresh_net

    if args.from_file is None:
        if args.weights or args.reinit:
            raise ValueError("--weights and --reinit go with --from MODEL_FILE")
        net, kwargs = fresh_net(args.model, x, classes, seed=args.seed, params=args.params,
                                **_options(args.arch_options, "--arch-options"))
        return net, args.model, {"arch_options": kwargs}
    if args.arch_options or args.params:
        raise ValueError("--arch-options and --params build an architecture by name; with "
                         "--from the file's architecture is trained")
    from .engine import Net
    from .loading import load

    net, meta = load(args.from_file, weights=args.weights)
    net, _ = _net_inputs(net, x[:1], "the dataset")  # its size, or a clear error
    if net.num_classes < classes:
        raise ValueError(f"{args.from_file}: the model has {net.num_classes} outputs, the "
                         f"dataset {classes} classes")
    if args.reinit:
        net = Net.from_spec(net.spec(), seed=args.seed)
    name = meta.get("model") or os.path.splitext(os.path.basename(args.from_file))[0]
    return net, name, {"from": args.from_file, "reinit": args.reinit}


def _train(args, out):
    from .engine.augment import RandomShiftFlip
    from .engine.checkpoint import save_checkpoint
    from .engine.train import SGD, Schedule, fit
    from .models.datasets import DATASETS, load_dataset

    x, y = _limited(*load_dataset(args.dataset, "train", data_dir=args.data_dir), args.limit)
    xt, yt = _limited(*load_dataset(args.dataset, "test", data_dir=args.data_dir), args.limit)
    net, name, made = _training_net(args, x, len(DATASETS[args.dataset]))
    net, x = _net_inputs(net, x, args.dataset)  # (a model file's own input units)
    _, xt = _net_inputs(net, xt, args.dataset)
    print(f"{name} on {args.dataset}: {len(x)} training and {len(xt)} test images, "
          f"{net.num_dense_params():,} parameters"
          + (" (fine-tuned from its file)" if args.from_file and not args.reinit else ""))
    steps = len(x) // args.batch_size
    schedule = Schedule(args.schedule, args.lr, total=max(args.epochs * steps, 1),
                        step_size=max(args.epochs * steps // 3, 1), warmup=steps // 2)
    t0 = time.perf_counter()
    history = fit(net, x, y, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer=SGD(args.momentum, args.weight_decay), schedule=schedule,
                  seed=args.seed, augment=RandomShiftFlip(2) if args.augment else None,
                  val=(xt, yt), checkpoint=args.checkpoint, progress=args.progress,
                  extend=args.extend)
    seconds = time.perf_counter() - t0
    accuracy = net.accuracy(xt, yt)
    meta = {"dataset": args.dataset, "model": name, "test_accuracy": accuracy,
            "train_seconds": seconds, "history": history, **made,
            "settings": {k: v for k, v in vars(args).items() if k not in ("progress",)}}
    save_checkpoint(out, net, meta=meta)
    print(f"trained in {seconds:.1f} s; model written to {out}")
    print(f"clean test accuracy: {100 * accuracy:.2f}%")
    return net, xt, yt


def _planned_for(net, x, dataset):
    """``net``, planned for the size of the dataset's images ``x`` where it differs (a fully
    convolutional net; any other is refused with both sizes)."""
    if tuple(x.shape[1:]) == net.input_shape:
        return net
    try:
        return net.at_input_shape(x.shape[1:])
    except ValueError as e:
        raise ValueError(f"the model takes {net.input_shape} inputs, {dataset}'s images are "
                         f"{tuple(x.shape[1:])} ({e})") from None


def _for_model(net, x, dataset):
    """(the net to run, the images in its units, the clip range, a line saying the units) for
    the dataset's [0, 1] images ``x``: the net with its preprocessing in front
    (``Net.with_preprocessing``), the images mapped onto its bounds. A fully convolutional net
    is planned for the images' size."""
    from .attacks._common import model_clip
    from .engine.preprocess import describe_bounds, to_bounds

    net = _planned_for(net, x, dataset)
    units = (f"eps in image units of {describe_bounds(net.bounds)}" if net.bounds is not None
             else "pixels in [0, 1] (the model declares no bounds)")
    if net.preprocessing:
        units += "; preprocessing " + ", ".join(f"{k} {v}" for k, v in net.preprocessing.items())
    return net.with_preprocessing(), to_bounds(x, net.bounds), model_clip(net), units


def _net_inputs(net, x, dataset):
    """The dataset's [0, 1] images ``x`` as ``net``'s own inputs (mapped onto its bounds,
    preprocessed) → (net, inputs); a fully convolutional net planned for their size. What
    training, compression and sensitivity feed the net they change."""
    from .engine.preprocess import apply, to_bounds

    net = _planned_for(net, x, dataset)
    return net, apply(to_bounds(x, net.bounds), net.preprocessing)


def _eval(args):
    from .models.datasets import load_dataset

    net, meta = _load(args)
    xt, yt = _limited(*load_dataset(args.dataset, "test", data_dir=args.data_dir), args.limit)
    net = _with_output(net, args, yt)
    model, x, _, units = _for_model(net, xt, args.dataset)
    head = f", output {args.output}" if args.output else ""
    print(f"{args.model} ({meta['loaded_from']['format']}{head}) on {len(xt)} {args.dataset} "
          f"test images; {units}")
    print(f"clean test accuracy: {100 * model.accuracy(x, yt):.2f}%")


def _predict(args):
    from .models.images import class_names, predict_files

    net, meta = _load(args)
    names = class_names(net, meta)
    for path, top in zip(args.images, predict_files(net, args.images, args.top, names)):
        print(f"{path}:")
        for index, name, p in top:
            print(f"  {p:7.4f}  {index:>4}  {name or ''}".rstrip())


def _attack_command(args):
    from .attacks.registry import canonical_name
    from .models.datasets import load_dataset

    names = [canonical_name(a, "--attack") for a in args.attack.split(",") if a.strip()]
    eps = _eps_list(args.eps)
    net, meta = _load(args)
    xt, yt = _limited(*load_dataset(args.dataset, "test", data_dir=args.data_dir), args.limit)
    net = _with_output(net, args, yt)
    model, x, clip, units = _for_model(net, xt, args.dataset)
    sanity = (f"sanity checks on (on up to {args.sanity_examples} images)" if args.sanity
              else "sanity checks off (--no-sanity)")
    head = f"output {args.output}, " if args.output else ""
    print(f"robustcnn attack: {args.model} ({meta['loaded_from']['format']}, {head}"
          f"{net.num_dense_params():,} parameters) on {len(x)} {args.dataset} test images, "
          f"true labels; attacks {', '.join(names)} at eps {', '.join(f'{e:g}' for e in eps)}; "
          f"{units}; {sanity}", flush=True)
    _attack(model, x, yt, names, eps, None, args.json, csv_path=args.csv,
            plot_path=args.plot, bpda=args.bpda, seed=args.seed,
            sanity_examples=args.sanity_examples, model=args.model, clip=clip,
            sanity=args.sanity, version=args.version, progress=args.progress,
            defence=_defence(args, model, x, net.bounds) if args.defence else None)


def _attack(net, xt, yt, attacks, eps, limit=None, json_path=None, *, csv_path=None,
            plot_path=None, bpda=False, seed=0, sanity_examples=256, model=None, clip=(0.0, 1.0),
            sanity=True, version="standard", progress=False,
            defence=None):
    """Run ``attacks.evaluate`` (``attacks``: names, or one comma-separated string), print the
    tables and the sanity checks, write the files asked for → evaluate's result dict.
    ``defence``: None, or a recorder of ``evaluate``'s examples with ``result()`` and
    ``format()`` (``defences.squeeze.DetectionRecorder``), reported beside the rows."""
    from .attacks.evaluate import csv_rows, CSV_COLUMNS, evaluate, format_evaluation, \
        plot_evaluation
    from .attacks.registry import canonical_name

    names = [a for a in (attacks.split(",") if isinstance(attacks, str) else attacks) if a.strip()]
    names = [canonical_name(a, "--attack") for a in names]  # bad names fail before any work
    xt, yt = _limited(xt, yt, limit)
    if sanity_examples < 1:
        raise ValueError(f"--sanity-examples must be >= 1, got {sanity_examples}")
    if plot_path:  # before the attacks run, not after
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--plot needs matplotlib: pip install 'robustcnn[plot]'")
    t0 = time.perf_counter()
    result = evaluate(net, xt, yt, names, eps, clip=clip, bpda=bpda, seed=seed,
                      sanity=sanity, sanity_examples=sanity_examples, progress=progress,
                      options={a: {"version": version} for a in ("autoattack-linf",
                                                                 "autoattack-l2")},
                      on_examples=defence,
                      log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    seconds = time.perf_counter() - t0
    result["model"], result["seconds"] = model, seconds
    result["clip"] = [c if isinstance(c, (int, float)) else list(map(float, c)) for c in clip]
    print(f"{', '.join(result['attacks'])} on {len(xt)} test images ({seconds:.1f} s), true "
          f"labels, clip {result['clip']}{', BPDA' if bpda else ''}:")
    print(format_evaluation(result))
    if defence is not None:
        result["defence"] = defence.result()
        print()
        print(defence.format())
    if bpda and not result["step_layers"]:
        print("note: --bpda changes nothing here: the net has no step-function layers "
              "(QuantizedReLU)", file=sys.stderr)
    failed = [c["name"] for c in result["sanity"] if not c["passed"]]
    if failed:
        print(f"WARNING: {len(failed)} sanity check(s) failed ({', '.join(failed)}): the "
              f"accuracies above may overstate robustness", file=sys.stderr)
    from .atomic import atomic_path

    if json_path:
        with atomic_path(json_path) as tmp, open(tmp, "w") as f:
            json.dump(result, f, indent=2)
    if csv_path:
        import csv

        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(csv_rows(result))
    if plot_path:
        plot_evaluation(result, plot_path, title=model and os.path.basename(model))
    return result


def _pairs(text, kind, option, check=None, expect=""):
    """'a=1,b=2' → {"a": kind("1"), "b": kind("2")}, each value passing ``check``."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            out[name] = kind(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"{option} takes LAYER=VALUE pairs, got {item!r}")
        if check is not None and not check(out[name]):
            raise ValueError(f"{option}: {name}'s value must be {expect}, got {value!r}")
    return out


# The keys of an --adversarial record and how each is read (the objective's settings:
# attacks.adversarial_training.OBJECTIVES).
_ADVERSARIAL_TYPES = {"objective": str, "attack": str, "eps": float, "fraction": float,
                      "steps": int, "alpha": float, "beta": float}


def _adversarial_pairs(text):
    """'attack=pgd,eps=0.1,steps=7' → {"attack": "pgd", "eps": 0.1, "steps": 7}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = (t.strip() for t in item.partition("="))
        if not sep or key not in _ADVERSARIAL_TYPES:
            raise ValueError(f"--adversarial takes KEY=VALUE pairs with keys "
                             f"{', '.join(_ADVERSARIAL_TYPES)}; got {item!r}")
        try:
            out[key] = _ADVERSARIAL_TYPES[key](value)
        except ValueError:
            raise ValueError(f"--adversarial: {key} must be a number, got {value!r}") from None
    return out


def _numbers(text, option):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"{option} takes comma-separated numbers, got {text!r}")
    return values if len(values) > 1 else values[0]


def _input_options(args):
    """(input_shape, preprocessing keys, bounds) the command line gives (None where not)."""
    shape = None
    if args.input_shape:
        shape = _numbers(args.input_shape, "--input-shape")
        shape = shape if isinstance(shape, list) else [shape]
        if len(shape) != 3 or any(v != int(v) or v < 1 for v in shape):
            raise ValueError(f"--input-shape takes C,H,W (three positive integers), got "
                             f"{args.input_shape!r}")
        shape = tuple(int(v) for v in shape)
    pre = {}
    for key, value in (("mean", args.mean), ("std", args.std)):
        if value is not None:
            pre[key] = _numbers(value, f"--{key}")
    if args.scale is not None:
        pre["scale"] = args.scale
    if args.channel_order is not None:
        pre["channel_order"] = args.channel_order
    bounds = None
    if args.bounds is not None:
        low, sep, high = args.bounds.partition(":")
        if sep:
            bounds = (_numbers(low, "--bounds"), _numbers(high, "--bounds"))
        else:
            pair = _numbers(args.bounds, "--bounds")
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError(f"--bounds takes LOW,HIGH (or per channel LOW1,…:HIGH1,…), "
                                 f"got {args.bounds!r}")
            bounds = tuple(pair)
    return shape, pre, bounds


def _load(args):
    """(net, meta) of the command's model (and --weights), any format ``robustcnn.load`` reads,
    with what the command line says about its input over what the file says."""
    from .loading import load

    shape, pre, bounds = _input_options(args)
    net, meta = load(args.model, weights=args.weights, input_shape=shape, bounds=bounds,
                     max_bytes=args.max_model_bytes)
    if pre:
        try:
            net.preprocessing = {**net.preprocessing, **pre}
        except ValueError as e:
            raise ValueError(f"{args.model}: {e}") from None
        meta["loaded_from"]["preprocessing"] = net.preprocessing
    return net, meta


def _model_bytes(args):
    """Bytes on disk of the model's weights: the weights file if separate, else the model file."""
    return os.path.getsize(args.weights or args.model)


def _method_options(args):
    """--options KEY=VALUE,… plus --bits, --epochs and --lr where the method has them."""
    from .compress.methods import METHODS

    given = _pairs(args.options, str, "--options") if args.options else {}
    defaults = METHODS[args.method].defaults
    for key, value in (("bits", args.bits), ("epochs", args.epochs), ("lr", args.lr),
                       ("activation_bits", args.activation_bits)):
        if value is not None:
            if key not in defaults:
                raise ValueError(f"--method {args.method} takes no --{key.replace('_', '-')}")
            given[key] = value
    return given


def _compress_by_method(args):
    from .compress.methods import run_method
    from .compress.modelfile import save_model
    from .compress.report import dense_parameter_bytes, format_layer_table, layer_table
    from .models.datasets import load_dataset

    options = _method_options(args)
    net, meta = _load(args)
    name = meta.get("model") or net.name
    dataset = meta.get("dataset", args.dataset) if args.dataset == "fashion-mnist" else args.dataset
    x, y = load_dataset(dataset, "train", data_dir=args.data_dir)
    xt, yt = load_dataset(dataset, "test", data_dir=args.data_dir)
    print(f"compressing {args.model} ({name}) on {dataset} by {args.method}")
    t0 = time.perf_counter()
    net, report = run_method(args.method, net, x, y, options, val=(xt, yt),
                             progress=args.progress)
    seconds = time.perf_counter() - t0
    accuracy = report["stages"][-1]["accuracy"]
    size = save_model(args.out, net, meta={
        "model": name, "dataset": dataset, "method": args.method, "test_accuracy": accuracy,
        "dense_test_accuracy": report["stages"][0]["accuracy"], "compress_seconds": seconds,
        "stages": report["stages"], "settings": report["settings"], "source": args.model})
    print(format_layer_table(layer_table(net), file_bytes=size,
                             dense_bytes=dense_parameter_bytes(net)))
    print(f"compressed in {seconds:.1f} s; written to {args.out}")
    print(f"test accuracy: dense {100 * report['stages'][0]['accuracy']:.2f}%, "
          f"{args.method} {100 * accuracy:.2f}%")


def _compress(args):
    from .attacks.adversarial_training import adversarial_objective
    from .compress.modelfile import save_model
    from .compress.pipeline import CompressionSettings, PRESETS, compress
    from .compress.report import dense_parameter_bytes, format_layer_table, layer_table
    from .models.datasets import load_dataset

    if args.method != "deep-compression":
        if args.pruning != "magnitude" or args.pruning_options or args.adversarial:
            raise ValueError("--pruning, --pruning-options and --adversarial go with --method "
                             "deep-compression (they choose its pruning stage and objective)")
        return _compress_by_method(args)
    if args.options or args.epochs is not None or args.activation_bits is not None:
        raise ValueError("--options, --epochs and --activation-bits go with --method")
    if args.preset and args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; presets: {sorted(PRESETS)}")
    overrides = _compression_overrides(args)  # checked before anything is read
    net, meta = _load(args)
    _check_layers(args, net)
    name = args.preset or meta.get("model") or net.name
    preset = PRESETS.get(name, {})
    base = dict(preset)
    for key in ("kept", "bits", "gap_bits"):  # the command line's layers over the preset's
        base[key] = {**preset.get(key, {}), **overrides[key]}
    if not base["kept"] and not base["bits"]:
        raise ValueError(f"no preset for {name!r} (presets: "
                         f"{sorted(PRESETS)}); give --prune and/or --bits")
    overrides = {k: v for k, v in (("rounds", args.rounds), ("retrain_epochs", args.retrain_epochs),
                                   ("finetune_epochs", args.finetune_epochs), ("lr", args.lr),
                                   ("finetune_lr", args.finetune_lr))
                 if v is not None}
    from .compress.pruning_methods import options_from_text, pruning_method

    spec = pruning_method(args.pruning, "--pruning")
    options = options_from_text(spec, args.pruning_options)
    spec.parse_options(options, "--pruning-options")  # bad options fail before any work
    overrides.update(pruning=spec.name, pruning_options=options)
    if args.adversarial:
        overrides["adversarial"] = _adversarial_pairs(args.adversarial)
    settings = CompressionSettings(**{**base, **overrides}, huffman=args.huffman,
                                   entropy=args.entropy, seed=args.seed)
    objective = adversarial_objective(settings.adversarial, settings.seed,
                                      where="--adversarial")
    dataset = meta.get("dataset", args.dataset) if args.dataset == "fashion-mnist" else args.dataset
    x, y = _limited(*load_dataset(dataset, "train", data_dir=args.data_dir), args.limit)
    xt, yt = _limited(*load_dataset(dataset, "test", data_dir=args.data_dir), args.limit)
    net, x = _net_inputs(net, x, dataset)
    _, xt = _net_inputs(net, xt, dataset)
    print(f"compressing {args.model} ({name}) on {dataset}: {len(x)} training images; pruned "
          f"to {_shares(base['kept'])}, codes of {_shares(base['bits'], bits=True)}")
    t0 = time.perf_counter()
    report = compress(net, x, y, settings, objective=objective, val=(xt, yt),
                      progress=args.progress)
    seconds = time.perf_counter() - t0
    accuracy = report["stages"][-1]["accuracy"]
    size = save_model(args.out, net, meta={
        "model": name, "dataset": dataset, "test_accuracy": accuracy,
        "dense_test_accuracy": report["stages"][0]["accuracy"], "compress_seconds": seconds,
        "stages": report["stages"], "settings": report["settings"], "source": args.model,
        "pruning_report": {k: v for k, v in report.items() if k not in ("settings", "stages")}})
    print(format_layer_table(layer_table(net), file_bytes=size,
                             dense_bytes=dense_parameter_bytes(net)))
    print(f"compressed in {seconds:.1f} s; written to {args.out}")
    print(f"test accuracy: dense {100 * report['stages'][0]['accuracy']:.2f}%, "
          f"compressed {100 * accuracy:.2f}%")


def _shares(table, *, bits=False):
    if not table:
        return "none"
    return ", ".join(f"{k} {v} bits" if bits else f"{k} {100 * (1 - v):g}%"
                     for k, v in table.items())


def _compression_overrides(args):
    """--prune, --bits and --gap-bits as {"kept", "bits", "gap_bits"} tables, their values
    checked before anything is read (``_check_layers`` checks the names against the model)."""
    tables = {}
    for option, text, kind, key, check, expect in (
            ("--prune", args.prune, float, "kept", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("--bits", args.bits, int, "bits", lambda v: 1 <= v <= 8, "in 1..8"),
            ("--gap-bits", args.gap_bits, int, "gap_bits", lambda v: 1 <= v <= 8, "in 1..8")):
        try:
            table = _pairs(text, kind, option, check, expect) if text else {}
        except ValueError as e:
            loose = _pairs(text, kind, option) if key == "kept" else {}
            wrong = [v for v in loose.values() if 1 <= v < 100]
            hint = (f" (a sparsity is the fraction of weights removed: did you mean "
                    f"{wrong[0] / 100:g}?)") if wrong else ""
            raise ValueError(f"{e}{hint}") from None
        tables[key] = {k: 1.0 - v for k, v in table.items()} if key == "kept" else table
    return tables


def _check_layers(args, net):
    """Every layer --prune, --bits and --gap-bits name has a weight in the model."""
    weighted = [layer.name for layer in net.layers if hasattr(layer, "weight_format")]
    for option, text in (("--prune", args.prune), ("--bits", args.bits),
                         ("--gap-bits", args.gap_bits)):
        unknown = sorted(set(_pairs(text, str, option)) - set(weighted)) if text else []
        if unknown:
            raise ValueError(f"{option}: {args.model} has no layer {unknown[0]!r} with a weight "
                             f"(layers with a weight: {', '.join(weighted)})")


def _write_text(path, text):
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def _sensitivity(args):
    from .compress.sensitivity import (format_sensitivity, plot_sensitivity, sensitivity,
                                       sensitivity_csv, suggest_kept)
    from .models.datasets import load_dataset

    net, meta = _load(args)
    dataset = meta.get("dataset", args.dataset) if args.dataset == "fashion-mnist" else args.dataset
    if args.holdout < 0:
        raise ValueError(f"--holdout must be >= 0, got {args.holdout}")
    if args.holdout:
        x, y = load_dataset(dataset, "train", data_dir=args.data_dir)
        x, y, where = x[-args.holdout:], y[-args.holdout:], f"the last {args.holdout} training"
    else:
        x, y = load_dataset(dataset, "test", data_dir=args.data_dir)
        where = "the test"
    if args.limit is not None:
        x, y = _limited(x, y, args.limit)
        where = f"{len(x)} of {where}"
    net, x = _net_inputs(net, x, dataset)
    layers = [t.strip() for t in args.layers.split(",") if t.strip()] if args.layers else None
    try:
        sparsities = [float(v) for v in args.sparsities.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sparsities must be comma-separated numbers, got "
                         f"{args.sparsities!r}") from None
    result = sensitivity(net, x, y, layers=layers, sparsities=sparsities, progress=args.progress)
    print(f"{args.model} on {where} images of {dataset}")
    print(format_sensitivity(result))
    kept = suggest_kept(result, args.max_drop)
    print(f"highest tried sparsity per layer within {100 * args.max_drop:g} pp: "
          + ", ".join(f"{name}={1 - k:.3g}" for name, k in kept.items()))
    if args.json:
        _write_text(args.json, json.dumps({**result, "suggested_kept": kept}, indent=2))
    if args.csv:
        _write_text(args.csv, sensitivity_csv(result))
    if args.plot:
        print(f"plot written to {plot_sensitivity(result, args.plot)}")


def _info(args):
    from .compress.report import dense_parameter_bytes, format_layer_table, layer_table
    from .engine.preprocess import describe_bounds

    net, meta = _load(args)
    shown = {k: v for k, v in meta.items() if k not in ("history", "stages", "settings")}
    if args.json:
        print(json.dumps({
            "model": args.model, "format": meta["loaded_from"]["format"], "name": net.name,
            "input": {"name": net.input_name, "shape": list(net.input_shape),
                      "bounds": net.spec().get("bounds"), "preprocessing": net.preprocessing},
            "outputs": {o: list(net.blob_shape(o)) for o in net.outputs},
            "parameters": net.num_dense_params(), "stored_values": net.num_params(),
            "file_bytes": _model_bytes(args), "dense_bytes": dense_parameter_bytes(net),
            "layers": [{"name": l.name, "type": l.type, "parameters": l.dense_param_count(),
                        "stored_values": int(sum(v.size for v in l.params.values()))}
                       for l in net.layers],
            "sizes": layer_table(net), "meta": shown}, indent=2, default=str))
        return
    print(net.summary())
    print()
    print(format_layer_table(layer_table(net), file_bytes=_model_bytes(args),
                             dense_bytes=dense_parameter_bytes(net)))
    print()
    print(f"input {net.input_name!r} {net.input_shape}, images {describe_bounds(net.bounds)}, "
          f"preprocessing {net.preprocessing or 'none'}; outputs "
          + ", ".join(f"{o} {net.blob_shape(o)}" for o in net.outputs))
    pruning = (meta.get("settings") or {}).get("pruning")
    if pruning:
        from .compress.pruning_methods import PRUNING_METHODS

        paper = (PRUNING_METHODS[pruning].paper if pruning in PRUNING_METHODS
                 else "unknown to this robustcnn")
        options = meta["settings"].get("pruning_options") or {}
        print(f"pruning method: {pruning} ({paper})"
              + (f"; options {json.dumps(options)}" if options else ""))
    print(json.dumps(shown, indent=2, default=str))


def _defence(args, net, x_attacked, bounds):
    """``robustcnn attack --defence squeeze``: the feature-squeezing detector on ``net`` (the
    model as attacked, its inputs in the units of ``bounds``), its threshold at 5% false
    positives on the first 10,000 training images, recording the attacks' examples."""
    from .defences.squeeze import DetectionRecorder, SqueezeDetector
    from .engine.preprocess import to_bounds
    from .models.datasets import load_dataset

    x, _ = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    detector = SqueezeDetector(net)
    detector.fit(to_bounds(x[:10_000], bounds), fpr=0.05)
    return DetectionRecorder(detector, x_attacked)


def _certify(args):
    from .atomic import atomic_path
    from .certify.evaluate import (CSV_COLUMNS, certify_model, csv_rows, format_certification,
                                   plot_certification)
    from .models.datasets import load_dataset

    if args.plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--plot needs matplotlib: pip install 'robustcnn[plot]'")
    net, meta = _load(args)
    if net.dtype.name != args.dtype:
        net = net.copy(dtype=args.dtype)
    dataset = meta.get("dataset", args.dataset) if args.dataset == "fashion-mnist" else args.dataset
    xt, yt = load_dataset(dataset, "test", data_dir=args.data_dir)
    xt, yt = xt[:args.limit], yt[:args.limit]
    # The images in the model's units (--bounds, or its own), its preprocessing in front; the
    # radii are in those units and the boxes stay inside its bounds.
    net, xt, clip, units = _for_model(net, xt, dataset)
    default = "0,0.25,0.5,0.75,1" if args.method == "smoothing" else "0.01,0.02,0.05,0.1"
    eps = _eps_list(args.eps or default)
    from .progress import progress_bar

    with progress_bar(enabled=args.progress, leave=False,
                      total=len(xt) if args.method == "smoothing" else len(eps),
                      unit="image" if args.method == "smoothing" else "eps") as bar:
        result = certify_model(net, xt, yt, args.method, eps, sigma=args.sigma, n0=args.n0,
                               n=args.n, alpha=args.alpha, clip=clip,
                               batch_size=args.batch_size, seed=args.seed, progress=bar.update)
    result["model"] = args.model
    print(f"{args.method} on {len(xt)} test images of {dataset} ({args.dtype}; {units}), clean "
          f"accuracy {100 * result['clean_accuracy']:.2f}%; certified accuracy:")
    print(format_certification(result))
    if args.json:
        with atomic_path(args.json) as tmp, open(tmp, "w") as f:
            json.dump(result, f, indent=2)
    if args.csv:
        import csv

        with atomic_path(args.csv) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(csv_rows(result))
    if args.plot:
        plot_certification(result, args.plot, title=os.path.basename(args.model))


# ---------------------------------------------------------------------------------------------
# The one error path: the command line checked before any work, input errors as one line


class _Parser(argparse.ArgumentParser):
    """argparse's parser (its subcommands' too), whose errors are one line without the usage
    block, as every other input error of the command."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# Numeric options by destination → (low, high, low included, high included); checked before
# any work, NaN and infinities refused.
_NUMBERS = {
    "epochs": (1, math.inf, True, False), "batch_size": (1, math.inf, True, False),
    "limit": (1, math.inf, True, False), "seed": (0, math.inf, True, False),
    "sanity_examples": (1, math.inf, True, False), "rounds": (1, math.inf, True, False),
    "retrain_epochs": (0, math.inf, True, False), "finetune_epochs": (0, math.inf, True, False),
    "holdout": (0, math.inf, True, False), "lr": (0, math.inf, False, False),
    "top": (1, math.inf, True, False),
    "finetune_lr": (0, math.inf, False, False), "momentum": (0, 1, True, False),
    "weight_decay": (0, math.inf, True, False), "max_drop": (0, 1, True, True),
}
# Files each command writes (option destination → its name); "report"'s -o is a directory.
_OUTPUTS = {"train": {"out": "-o", "checkpoint": "--checkpoint"},
            "attack": {"json": "--json", "csv": "--csv", "plot": "--plot"},
            "compress": {"out": "-o"},
            "sensitivity": {"json": "--json", "csv": "--csv", "plot": "--plot"},
            "certify": {"json": "--json", "csv": "--csv", "plot": "--plot"},
            "study": {"db": "--db"}, "demo": {"db": "--db"}}


def _check_args(args):
    """Refuse bad numbers, names and output paths before any work starts (ValueError naming
    the option)."""
    for dest, (low, high, low_in, high_in) in _NUMBERS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if not (math.isfinite(value) and (low <= value if low_in else low < value)
                and (value <= high if high_in else value < high)):
            bounds = f"{'>=' if low_in else '>'} {low:g}" + (
                "" if high == math.inf else f" and {'<=' if high_in else '<'} {high:g}")
            finite = "" if isinstance(value, int) else "finite and "
            raise ValueError(f"--{dest.replace('_', '-')} must be {finite}{bounds}, got "
                             f"{value!r}")
    if getattr(args, "max_model_bytes", None) is not None:
        from .limits import parse_size

        args.max_model_bytes = parse_size(args.max_model_bytes)
    if getattr(args, "dataset", None) is not None:
        from .models.datasets import DATASETS

        if args.dataset not in DATASETS:
            raise ValueError(f"--dataset: unknown dataset {args.dataset!r} (known: "
                             f"{', '.join(sorted(DATASETS))})")
    if args.command == "train" and args.out is None:
        args.out = os.path.join("runs", f"{args.model}.h5")
    for dest, option in _OUTPUTS.get(args.command, {}).items():
        if getattr(args, dest, None):
            _check_output(getattr(args, dest), option)
    if args.command in ("study", "demo") and os.path.isfile(args.db):
        from .study.store import check_store

        check_store(args.db, option="--db")
    if args.command == "report":
        args.out = args.out or os.path.splitext(args.db)[0] + "-report"
        _check_output(args.out, "-o", directory=True)


def _check_output(path, option, *, directory=False):
    """Refuse an output path that cannot be written: a directory where a file is wanted (or a
    file where a directory is), a parent that is not a directory or is not writable."""
    want = "directory" if directory else "file"
    if os.path.exists(path) and os.path.isdir(path) != directory:
        raise ValueError(f"{option} {path}: is a {'file' if directory else 'directory'}, not a "
                         f"{want}")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # written in directories made on the way
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write in {parent} (permission denied)")


def _input_error(e, args):
    """The one line of a failure caused by the command's input, or None (an internal error)."""
    if isinstance(e, FloatingPointError):  # finite but huge weights: the net names the layer
        text = f"{args.model}: {e}" if getattr(args, "model", None) else str(e)
    elif isinstance(e, (ValueError, FileNotFoundError)):
        text = str(e)
    elif isinstance(e, OSError) and e.filename is not None:  # a path of the command line
        text = f"{e.filename}: {e.strerror or e}"
    else:
        return None
    return " / ".join(line.strip() for line in text.splitlines() if line.strip()) or repr(e)


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad command line: argparse printed its one line
        return e.code if isinstance(e.code, int) else 2
    try:
        _check_args(args)
        return _run(args)
    except BrokenPipeError:  # the reader of our output left (`robustcnn info --json M | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 1
    except Exception as e:
        message = _input_error(e, args)
        if message is None:
            raise
        print(f"robustcnn {args.command}: error: {message}", file=sys.stderr)
        return 2


def _run(args):
    if args.command == "train":
        _train(args, args.out)
    elif args.command == "info":
        _info(args)
    elif args.command == "compress":
        _compress(args)
    elif args.command == "sensitivity":
        _sensitivity(args)
    elif args.command == "eval":
        _eval(args)
    elif args.command == "attack":
        _attack_command(args)
    elif args.command == "predict":
        _predict(args)
    elif args.command == "study":
        from .study.config import load_config
        from .study.runner import run_study

        study = load_config(args.config)
        result = run_study(study, args.db, limit=args.limit, progress=args.progress,
                           scheduler=args.scheduler, estimate=True)
        print(f"{result['written']} cell(s) written, {result['done_before']} already done, "
              f"{result['remaining']} remaining of {result['cells']} ({result['seconds']:.1f} s); "
              f"results in {args.db}")
    elif args.command == "report":
        from .study.report import write_report

        for path in write_report(args.db, args.out):
            print(f"written: {path}")
    elif args.command == "demo":
        _demo(args)
    elif args.command == "certify":
        _certify(args)
    return 0
