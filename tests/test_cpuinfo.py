"""cnnext._cpuinfo: the CPU named from /proc/cpuinfo texts of the machines seen, and this one."""

from cnnext import _cpuinfo

INTEL_KVM = """\
processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 207
model name	: Intel(R) Xeon(R) Processor
stepping	: 2
flags		: fpu avx512f

processor	: 1
vendor_id	: GenuineIntel
model name	: something else
"""

AMD_GENOA = """\
processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC 9R14 96-Core Processor
stepping	: 1
"""

ARM64 = """\
processor	: 0
BogoMIPS	: 50.00
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x3
CPU part	: 0xd0c
CPU revision	: 1
"""


def test_intel_under_kvm_is_named_by_family_and_model():
    info = _cpuinfo.parse_proc_cpuinfo(INTEL_KVM)
    assert info == {"vendor": "GenuineIntel", "brand": "Intel(R) Xeon(R) Processor",
                    "family": 6, "model": 207, "stepping": 2}
    info["microarchitecture"] = _cpuinfo.microarchitecture("GenuineIntel", 6, 207)
    assert info["microarchitecture"] == "Emerald Rapids (Xeon 5th gen)"
    assert _cpuinfo.describe(info) == (
        "Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 207 stepping 2; "
        "Intel Emerald Rapids (Xeon 5th gen))")
    assert _cpuinfo.kind({**info, "key": "GenuineIntel-6-207"}) == \
        "Intel Emerald Rapids (Xeon 5th gen)"


def test_a_model_number_no_table_knows_names_no_microarchitecture():
    # A KVM guest with AVX-512 FP16 and AMX reporting model 167, which Intel
    # gives a desktop part without AMX: the number is reported as is, and the
    # kind keeps it apart from other Xeons sharing the masked brand string.
    info = _cpuinfo.parse_proc_cpuinfo(INTEL_KVM.replace("207", "167"))
    info["microarchitecture"] = _cpuinfo.microarchitecture("GenuineIntel", 6, 167)
    assert info["microarchitecture"] is None
    assert _cpuinfo.describe(info) == (
        "Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 167 stepping 2)")
    kind = _cpuinfo.kind({**info, "key": "GenuineIntel-6-167"})
    assert kind == "Intel Xeon Processor, family 6 model 167"
    assert kind != _cpuinfo.kind({**info, "model": 143, "key": "GenuineIntel-6-143"})


def test_amd_zen4_and_arm64():
    info = _cpuinfo.parse_proc_cpuinfo(AMD_GENOA)
    assert (info["vendor"], info["family"], info["model"]) == ("AuthenticAMD", 25, 17)
    assert _cpuinfo.microarchitecture("AuthenticAMD", 25, 17) == "Zen 4"
    assert _cpuinfo.microarchitecture("AuthenticAMD", 25, 1) == "Zen 3"
    info = _cpuinfo.parse_proc_cpuinfo(ARM64)
    assert info["vendor"] == "arm-implementer-0x41" and info["model"] == 0xD0C
    assert _cpuinfo.microarchitecture(info["vendor"], info["family"], info["model"]) is None


def test_unknown_cpus_fall_back_to_the_brand_or_the_key():
    info = {"vendor": "GenuineIntel", "brand": None, "family": 6, "model": 1, "stepping": 0,
            "microarchitecture": None, "key": "GenuineIntel-6-1", "machine": "x86_64"}
    assert _cpuinfo.kind(info) == "Intel, family 6 model 1"
    assert _cpuinfo.kind({**info, "vendor": None, "family": None}) == "GenuineIntel-6-1"
    assert _cpuinfo.describe(info) == "Intel (GenuineIntel family 6 model 1 stepping 0)"
    assert _cpuinfo._windows("Intel64 Family 6 Model 207 Stepping 2, GenuineIntel") == {
        "vendor": "GenuineIntel", "brand": None, "family": 6, "model": 207, "stepping": 2}
    assert _cpuinfo._windows("arm") is None


def test_this_machine():
    info = _cpuinfo.identify()
    assert set(info) >= {"vendor", "family", "model", "stepping", "brand", "machine",
                         "microarchitecture", "key", "name"}
    assert info["key"] and info["name"] and _cpuinfo.kind()
    assert " " not in info["key"]
