"""The host line every benchmark prints beside its CPU figures."""

from structsent.bench.host import cpu_isa, cpu_model, describe_cpu

VNNI_HOST = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni
"""
AVX2_HOST = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2
"""


def test_isa_lists_the_inference_extensions_in_a_fixed_order():
    assert cpu_isa(VNNI_HOST) == "ISA avx2+fma+avx512f+avx512bw+avx512_vnni"
    assert cpu_isa(AVX2_HOST) == "ISA avx2+fma"


def test_isa_without_any_known_extension_says_so():
    assert cpu_isa("flags\t: fpu sse2\n").startswith("ISA none of avx2/")
    assert cpu_isa("processor\t: 0\n") == "ISA unknown"


def test_model_name_is_read_from_cpuinfo():
    assert cpu_model(AVX2_HOST) == "AMD EPYC 7B13"


def test_this_host_is_described_with_cores_and_isa():
    line = describe_cpu()
    assert line.startswith("CPU ") and " cores, ISA " in line
