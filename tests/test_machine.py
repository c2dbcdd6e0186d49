from mobilezoo.machine import FEATURES, INT8_DOT_FEATURES, CpuInfo, cpu_info, machine_key, parse_cpuinfo

AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma avx2 sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma avx2 sha_ni avx512_vnni
"""
INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx2 fma avx512f avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""


def test_parse_cpuinfo_reads_the_first_processor_and_the_known_features() -> None:
    amd = parse_cpuinfo(AMD)
    assert (amd.vendor, amd.model) == ("AuthenticAMD", "AMD EPYC 7B13")
    assert amd.features == {"avx2", "fma"}  # the second processor's flags are not read; sha_ni is not a feature we use
    assert amd.int8_dot is None and amd.bf16 is None
    assert amd.summary() == "AMD EPYC 7B13 (AVX2, no int8 dot product, no bf16)"
    intel = parse_cpuinfo(INTEL)
    assert intel.int8_dot == "amx_int8" and intel.bf16 == "amx_bf16"  # the strongest one is named
    assert "AVX-512" in intel.summary()
    assert intel.to_dict()["features"] == sorted(intel.features)
    assert (amd.kind(), intel.kind()) == ("amd_avx2", "intel_amx_int8")  # results files are named by it


def test_vnni_without_amx_is_an_int8_dot_product() -> None:
    cpu = CpuInfo("GenuineIntel", "x", frozenset({"avx2", "avx_vnni"}))
    assert cpu.int8_dot == "avx_vnni" and cpu.bf16 is None


def test_machine_key_changes_with_cpu_and_runtime_versions() -> None:
    amd, intel = parse_cpuinfo(AMD), parse_cpuinfo(INTEL)
    versions = {"torch": "2.14.1", "onnxruntime": "1.32.0", "openvino": None}
    assert machine_key(amd, versions) == machine_key(amd, dict(versions))
    assert machine_key(amd, versions) != machine_key(intel, versions)
    assert machine_key(amd, versions) != machine_key(amd, {**versions, "onnxruntime": "1.33.0"})


def test_cpu_info_of_this_machine() -> None:
    cpu = cpu_info()
    assert cpu.model and cpu.features <= set(FEATURES)
    assert cpu.int8_dot in (None, *INT8_DOT_FEATURES)
