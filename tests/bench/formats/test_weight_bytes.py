"""bench/formats/weight_bytes.py: bytes per format, per layer and per case."""

import json

from robustcnn.bench.formats import contenders, weight_bytes as wb


def test_lenet5_bytes_follow_deep_compression_densities():
    rows = wb.lenet5_bytes()
    assert [r.name for r in rows] == list(wb.LENET5_DC_KEPT)
    for r in rows:
        assert r.nonzeros == round(wb.LENET5_DC_KEPT[r.name] * r.size)
        assert r.bytes["dense"] == 4 * r.size and r.bytes["huffman cached"] == \
            r.bytes["sparse codebook"]
    total = wb.total_row(rows)
    assert total.size == 430_500 and total.bytes["huffman"] < total.bytes["sparse codebook"]
    table = wb.net_bytes_table(rows)
    assert len(table.splitlines()) == 2 + len(rows) + 1 and "total" in table


def test_squeezenet_bytes_add_up_to_the_file():
    rows, file_bytes, biases = wb.squeezenet_bytes()
    assert len(rows) == 26 and file_bytes == 675_763
    # the file: 26 uint32 counts + per layer 256 centroids, biases, codes, gaps; ours: the same
    # streams and centroids + a 14-byte header per layer
    stored = wb.total_row(rows).bytes["sparse codebook"]
    assert stored + biases == file_bytes - 4 * 26 + 14 * 26


def test_bytes_tables_and_json():
    entries = [("w", {"dense": 4096, "csr": 1024, contenders.TORCH_SPARSE: 2048})]
    lines = wb.bytes_read_table(entries).splitlines()
    assert len(lines) == 4 and "4.0x" in lines[3] and "-" in lines[2]
    rows = [wb.LayerBytes("a", (2, 3), 3, 4, {"dense": 24, "csr": 20})]
    doc = json.loads(json.dumps(wb.bytes_records(entries, rows, rows)))
    assert doc["bytes_read_per_inference"][1] == {"weight": "w", "format": "csr", "bytes": 1024}
    assert doc["lenet5_deep_compression_densities"][-1]["layer"] == "total"
