"""The model zoo, the data and model files: the LeNets (``lenet``), the ImageNet and small
zoo architectures with data-dependent initialisation (``zoo``), Deep Compression's SqueezeNet
(``squeezenet_dc``), every architecture by name for a dataset's images (``architectures``),
IDX files (``idx``) and datasets (``datasets``: MNIST, Fashion-MNIST, CIFAR-10, and ``digits``:
scikit-learn's handwritten digits at 28×28), image files as
a net's input (``images``, with Pillow), Caffe and Keras files (the subpackages ``caffe``, whose
binary files need protobuf, and ``keras``). ``robustcnn.load`` reads any model file.

The public names of these modules are attributes of this package, loaded on first use (so
``import robustcnn.models`` imports neither NumPy nor protobuf): ``models.lenet5()``,
``models.build_zoo("mobilenet_small")``, ``models.load_dataset("fashion-mnist", "train")``,
``models.caffe.load_caffe(…)`` …
"""

from .._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "lenet": ("lenet5", "lenet_300_100", "build_model", "MODELS"),
    "architectures": ("build_architecture", "fresh_net"),
    "zoo": ("alexnet", "caffenet", "vgg16", "googlenet", "squeezenet_v1_0", "squeezenet_v1_1",
            "squeezenet_small", "mobilenet_v1", "mobilenet_small", "inception_v3", "ZOO",
            "build_zoo", "data_init", "compact_for_params", "WIDTH_KNOBS"),
    "squeezenet_dc": ("squeezenet_v1_0_deep_compression", "caffe_input", "imagenet_classes",
                      "top_k"),
    "datasets": ("load_dataset", "load_mnist_like", "load_cifar10", "DATASETS", "data_dir",
                 "MNIST_CLASSES", "FASHION_MNIST_CLASSES"),
    "digits": ("load_digits_split", "split_indices", "upsample_bilinear"),
    "idx": ("read_idx", "write_idx"),
    "images": ("read_image", "read_images", "net_input", "class_names", "predict_files"),
}, submodules=("lenet", "zoo", "squeezenet_dc", "datasets", "digits", "idx", "images", "caffe",
               "keras", "architectures"))

del lazy_exports
