"""What CPU a measurement ran on: its model name and the ISA extensions that decide which kernels
PyTorch and onnxruntime pick (AVX2, AVX-512, VNNI, AMX).

Speed figures are only comparable on the same kind of host, and hosts that report the same model
name may expose different extensions (a virtual machine can mask AVX-512). Every benchmark row
records this, read from the running host, never assumed.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["ISA_FLAGS", "cpu_description", "cpu_summary", "host_has_vnni"]

#: /proc/cpuinfo flags that matter to the x86 convolution and INT8 kernels, in the order reported.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def cpu_description() -> dict[str, object]:
    """``{"model": str, "isa": [flags from ISA_FLAGS present], "logical_cpus": int, "machine": str}``.

    On Linux from /proc/cpuinfo; elsewhere the model is ``platform.processor()`` and ``isa`` is empty
    (unknown, not absent)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags], "logical_cpus": os.cpu_count() or 0,
            "machine": platform.machine()}


def cpu_summary() -> str:
    """One line for a table caption: ``AMD EPYC, 2 logical CPUs, avx2 fma avx512f ...``."""
    cpu = cpu_description()
    isa = " ".join(cpu["isa"]) or "no AVX2/AVX-512 flags reported"
    return f"{cpu['model']} ({cpu['machine']}), {cpu['logical_cpus']} logical CPUs, ISA: {isa}"


def host_has_vnni() -> bool:
    """Whether this CPU reports an 8-bit dot-product instruction (AVX-512 VNNI, AVX-VNNI, AMX)
    that does not saturate: without one, u8 x s8 products go through AVX2's ``vpmaddubsw``, whose
    16-bit sums can overflow, and weights want a 7-bit range (``reduce_range``). Non-x86 hosts
    (ARM's dot products do not saturate) count as having it."""
    cpu = cpu_description()
    if cpu["machine"] not in ("x86_64", "AMD64", "i386", "i686"):
        return True
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu["isa"]))
