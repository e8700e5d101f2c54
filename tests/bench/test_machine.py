"""bench/machine.py: the peak from the CPU flags."""

from robustcnn.bench import machine


def test_flops_per_cycle_reads_the_flags():
    assert machine.flops_per_cycle({"avx512f"})[0] == 32
    assert machine.flops_per_cycle({"avx2", "fma"})[0] == 32
    assert machine.flops_per_cycle({"avx"})[0] == 16
    assert machine.flops_per_cycle(set())[0] == 8
