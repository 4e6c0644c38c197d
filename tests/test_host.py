"""The host record every benchmark row carries is read from this machine."""

from pathlib import Path

import pytest

from nasnet_backbones.host import ISA_FLAGS, cpu_description, cpu_summary


def test_cpu_description_reads_this_host():
    cpu = cpu_description()
    assert isinstance(cpu["model"], str) and cpu["model"]
    assert set(cpu["isa"]) <= set(ISA_FLAGS)
    assert cpu["logical_cpus"] >= 1
    info = Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo here")
    flags = next(line.split(":", 1)[1].split() for line in info.read_text().splitlines() if line.startswith("flags"))
    assert cpu["isa"] == [f for f in ISA_FLAGS if f in flags]  # every extension present, none invented
    assert cpu["model"] in cpu_summary()
