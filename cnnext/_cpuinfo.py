"""Which CPU this is: vendor, family/model/stepping, brand string, micro-architecture.

Benchmark reports name the CPU with it, and the tuning cache (cnnext._tuning)
keys its measured plan choices by it: a choice timed on one
micro-architecture says nothing about another.  Virtual machines often hide
the brand ("Intel(R) Xeon(R) Processor" under KVM) but pass the family and
model through, so the micro-architecture comes from those.

Sources: /proc/cpuinfo (Linux), ``sysctl`` (macOS), ``platform.processor()``
(Windows: "Intel64 Family 6 Model 207 Stepping 2, GenuineIntel"), then
``platform.machine()``.  Nothing here fails: unknown fields are None.
"""

import functools
import platform
import re
import subprocess

# (vendor, family, first model, last model) -> micro-architecture.  Only the
# server and desktop parts a wheel user is likely to meet; anything else is
# named by its family and model.
_MICROARCHITECTURES = (
    ("GenuineIntel", 6, 0x55, 0x55, "Skylake-SP / Cascade Lake"),
    ("GenuineIntel", 6, 0x6A, 0x6C, "Ice Lake-SP"),
    ("GenuineIntel", 6, 0x8F, 0x8F, "Sapphire Rapids (Xeon 4th gen)"),
    ("GenuineIntel", 6, 0xCF, 0xCF, "Emerald Rapids (Xeon 5th gen)"),
    ("GenuineIntel", 6, 0xAD, 0xAE, "Granite Rapids (Xeon 6)"),
    ("GenuineIntel", 6, 0x8C, 0x8D, "Tiger Lake"),
    ("GenuineIntel", 6, 0x97, 0x9A, "Alder Lake"),
    ("GenuineIntel", 6, 0xB7, 0xBF, "Raptor Lake"),
    ("AuthenticAMD", 0x17, 0x00, 0x2F, "Zen / Zen+"),
    ("AuthenticAMD", 0x17, 0x30, 0xFF, "Zen 2"),
    ("AuthenticAMD", 0x19, 0x00, 0x0F, "Zen 3"),
    ("AuthenticAMD", 0x19, 0x10, 0x1F, "Zen 4"),
    ("AuthenticAMD", 0x19, 0x20, 0x5F, "Zen 3"),
    ("AuthenticAMD", 0x19, 0x60, 0xAF, "Zen 4"),
    ("AuthenticAMD", 0x1A, 0x00, 0xFF, "Zen 5"),
)

_VENDOR_NAMES = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}


def microarchitecture(vendor, family, model):
    """The micro-architecture's name for a vendor id and family/model numbers, or None."""
    for known_vendor, known_family, first, last, name in _MICROARCHITECTURES:
        if vendor == known_vendor and family == known_family and first <= (model or -1) <= last:
            return name
    return None


def _int(text):
    text = text.strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


def parse_proc_cpuinfo(text):
    """The first processor's fields of a /proc/cpuinfo text (x86 or arm64)."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor only
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    info = {"vendor": fields.get("vendor_id"), "brand": fields.get("model name"),
            "family": None, "model": None, "stepping": None}
    if "cpu family" in fields:
        info["family"] = _int(fields["cpu family"])
        info["model"] = _int(fields.get("model", ""))
        info["stepping"] = _int(fields.get("stepping", ""))
    elif "CPU implementer" in fields:  # arm64: implementer, part, variant, revision
        info["vendor"] = f"arm-implementer-{fields['CPU implementer']}"
        info["family"] = _int(fields.get("CPU architecture", ""))
        info["model"] = _int(fields.get("CPU part", ""))
        info["stepping"] = _int(fields.get("CPU revision", ""))
    return info


def _windows(text):
    match = re.search(r"Family (\d+) Model (\d+) Stepping (\d+), (\w+)", text or "")
    if not match:
        return None
    family, model, stepping, vendor = match.groups()
    return {"vendor": vendor, "brand": None, "family": int(family), "model": int(model),
            "stepping": int(stepping)}


def _sysctl(name):
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _raw():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            info = parse_proc_cpuinfo(file.read())
        if info["vendor"] or info["brand"]:
            return info
    except OSError:
        pass
    if platform.system() == "Darwin":
        return {"vendor": _sysctl("machdep.cpu.vendor"),
                "brand": _sysctl("machdep.cpu.brand_string"),
                "family": _int(_sysctl("machdep.cpu.family") or ""),
                "model": _int(_sysctl("machdep.cpu.model") or ""),
                "stepping": _int(_sysctl("machdep.cpu.stepping") or "")}
    info = _windows(platform.processor())
    if info:
        return info
    return {"vendor": None, "brand": platform.processor() or None, "family": None,
            "model": None, "stepping": None}


@functools.cache
def identify():
    """identify()

    This machine's CPU as a dict: ``vendor`` (e.g. "GenuineIntel"),
    ``family``, ``model``, ``stepping`` (ints or None), ``brand`` (the brand
    string or None), ``microarchitecture`` (e.g. "Emerald Rapids (Xeon 5th
    gen)" or None), ``machine`` (e.g. "x86_64"), ``key`` (a short stable
    identifier: vendor, family and model, e.g. "GenuineIntel-6-207") and
    ``name`` (what a report prints).
    """
    info = _raw()
    info["machine"] = platform.machine()
    info["microarchitecture"] = microarchitecture(info["vendor"], info["family"], info["model"])
    parts = [info["vendor"] or info["machine"] or "unknown"]
    if info["family"] is not None:
        parts += [str(info["family"]), str(info["model"])]
    elif info["brand"]:
        parts.append(re.sub(r"[^A-Za-z0-9]+", "_", info["brand"]).strip("_"))
    info["key"] = "-".join(parts)
    info["name"] = describe(info)
    return info


def describe(info):
    """One line naming the CPU of an ``identify()`` dict: brand, family/model, design."""
    brand = info.get("brand") or _VENDOR_NAMES.get(info.get("vendor"), info.get("vendor")) \
        or info.get("machine") or "unknown CPU"
    details = []
    if info.get("family") is not None:
        details.append(f"{info.get('vendor')} family {info['family']} model {info['model']} "
                       f"stepping {info.get('stepping')}")
    if info.get("microarchitecture"):
        vendor = _VENDOR_NAMES.get(info.get("vendor"), "")
        details.append(f"{vendor} {info['microarchitecture']}".strip())
    return f"{brand} ({'; '.join(details)})" if details else brand


def kind(info=None):
    """kind(info=None)

    The CPU kind benchmark tables are kept per, as a short title: the vendor
    and micro-architecture when known ("Intel Emerald Rapids (Xeon 5th gen)"),
    else the brand string (trademark signs dropped) and the family and model
    numbers as reported ("Intel Xeon Processor, family 6 model 167"), else
    the key.  The numbers stay in the title because virtual machines give
    different CPUs the same brand string, and may report a model number the
    CPU does not have: the title says what was reported, never a
    micro-architecture guessed from it.
    """
    info = identify() if info is None else info
    vendor = _VENDOR_NAMES.get(info.get("vendor"), info.get("vendor") or "")
    if info.get("microarchitecture"):
        return f"{vendor} {info['microarchitecture']}".strip()
    brand = re.sub(r"\s+", " ", re.sub(r"\((R|TM|C)\)", "", info.get("brand") or "",
                                      flags=re.IGNORECASE)).strip() or vendor
    if info.get("family") is not None and brand:
        return f"{brand}, family {info['family']} model {info['model']}"
    return brand or info["key"]
