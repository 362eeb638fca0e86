"""Split this host's CPUs for a server measured apart from its clients: prints the first N CPUs
by (socket, core), SMT siblings together, and the rest, each in ``taskset`` list syntax.

    python benchmarks/cpu_split.py 16   ->   0-7,32-39 8-31,40-63
"""

import os
import sys
from pathlib import Path


def core_of(cpu: int) -> tuple[int, int]:
    topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
    return int((topology / "physical_package_id").read_text()), int((topology / "core_id").read_text())


def taskset_list(cpus: list[int]) -> str:
    runs, cpus = [], sorted(cpus)
    for cpu in cpus:
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def main() -> None:
    count = int(sys.argv[1])
    cpus = sorted(os.sched_getaffinity(0), key=lambda cpu: (core_of(cpu), cpu))
    if len(cpus) <= count:
        sys.exit(f"this host has {len(cpus)} CPUs: none would be left for the viewers")
    print(taskset_list(cpus[:count]), taskset_list(cpus[count:]))


if __name__ == "__main__":
    main()
