"""The model zoo and the data: LeNets (``robustcnn.models.lenet``), IDX files and datasets
(``robustcnn.models.idx``, ``robustcnn.models.datasets``), Caffe and Keras files
(``robustcnn.models.caffe``, whose binary files need protobuf, and ``robustcnn.models.keras``),
the ImageNet zoo (``robustcnn.models.zoo``)."""
