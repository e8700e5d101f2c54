"""The model zoo and the data: LeNets (``robustcnn.models.lenet``), IDX files and datasets
(``robustcnn.models.idx``, ``robustcnn.models.datasets``)."""
