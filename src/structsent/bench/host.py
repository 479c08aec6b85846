"""What a CPU figure was measured on: the processor, its vector extensions, cores and load.

Hosts of one kind differ (AVX2 only, AVX-512 VNNI, bf16, AMX), and a figure means little
without them, so every benchmark prints this line beside its CPU numbers.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The extensions that change inference speed, in the order they are printed.
INFERENCE_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""  # not Linux: every field reads as unknown


def _cpuinfo_field(cpuinfo: str, name: str) -> str | None:
    for line in cpuinfo.splitlines():
        if line.startswith(name) and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def cpu_isa(cpuinfo: str | None = None) -> str:
    """'ISA avx2+fma+avx512f+...' from /proc/cpuinfo (or the given text); 'ISA unknown' elsewhere."""
    flags = _cpuinfo_field(_read_cpuinfo() if cpuinfo is None else cpuinfo, "flags")
    if flags is None:
        return "ISA unknown"
    have = set(flags.split())
    found = [name for name in INFERENCE_EXTENSIONS if name in have]
    return "ISA " + ("+".join(found) if found else "none of " + "/".join(INFERENCE_EXTENSIONS))


def cpu_model(cpuinfo: str | None = None) -> str:
    name = _cpuinfo_field(_read_cpuinfo() if cpuinfo is None else cpuinfo, "model name")
    return name or platform.processor() or platform.machine()


def describe_cpu() -> str:
    """One line: 'CPU <model>, <n> cores, ISA <extensions>, load <1-min load average>'."""
    try:
        load = f", load {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    return f"CPU {cpu_model()}, {os.cpu_count()} cores, {cpu_isa()}{load}"
