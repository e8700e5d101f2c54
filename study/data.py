"""The data of a study: its dataset's training and test sets, cut to the sizes it asks for."""


def load_data(study):
    """(x, y, xt, yt) of the study's dataset, cut to its train_examples / test_examples."""
    from ..models.datasets import load_dataset

    x, y = load_dataset(study.dataset, "train", data_dir=study.data_dir)
    xt, yt = load_dataset(study.dataset, "test", data_dir=study.data_dir)
    if study.train_examples:
        x, y = x[:study.train_examples], y[:study.train_examples]
    if study.test_examples:
        xt, yt = xt[:study.test_examples], yt[:study.test_examples]
    return x, y, xt, yt
