"""The weight-format suite: layers with pruned weights in every format of
``robustcnn.engine.formats`` against torch dense, torch sparse and scipy.sparse; Huffman decode
throughput; the bytes each format stores.

    contenders.py      cases with several implementations: check, time in turns, tables, records
    weights.py         the pruned, quantized weight of a case, in every format
    layers.py          FC and conv cases, and the FC layer's peers (``LINEAR_PEERS``)
    huffman_decode.py  our Huffman decoder against a NumPy one
    rans_decode.py     rANS against Huffman on the same streams: decode MB/s, stored sizes
    cm_decode.py       context mixing against rANS and Huffman: decode MB/s, stored sizes
    weight_bytes.py    bytes per format: per case, per layer of SqueezeNet and LeNet-5
    suite.py           the section: its cases in order, report, targets, records
"""
