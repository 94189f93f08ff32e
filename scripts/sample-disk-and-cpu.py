#!/usr/bin/env python3
"""Prints, every 250 ms, what the disk did and how much CPU each process of a stack used,
to line a run's late confirmations (its episodes' times of day) up with the machine.

    scripts/sample-disk-and-cpu.py RUN_DIR [DEVICE] > samples.log &   # then the workload

RUN_DIR is the launcher's run folder (its `pids` file names the processes; a glob such
as '/tmp/tmp.*/run' follows `scripts/bench.sh`'s temporary stacks); DEVICE is the block
device of /proc/diskstats (default: the first with writes). Each line: UTC time, writes
completed, MiB written, ms the device was busy and ms of queued I/O in the quarter second,
then each process's CPU in % of a core.
"""
import datetime
import glob
import os
import sys
import time

run_dirs = sys.argv[1] if len(sys.argv) > 1 else "/tmp/tmp.*/run"
tick = os.sysconf("SC_CLK_TCK")


def disk_fields():
    for line in open("/proc/diskstats"):
        fields = line.split()
        if (len(sys.argv) > 2 and fields[2] == sys.argv[2]) or (len(sys.argv) <= 2 and int(fields[7]) > 0):
            # writes completed, sectors written, ms doing I/O, weighted ms doing I/O
            return int(fields[7]), int(fields[9]), int(fields[12]), int(fields[13])
    return 0, 0, 0, 0


def cpu_seconds():
    seconds = {}
    for pids in glob.glob(os.path.join(run_dirs, "pids")):
        for line in open(pids):
            name, pid = line.split()
            try:
                stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                seconds[name] = (int(stat[11]) + int(stat[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
    return seconds


last_disk, last_cpu = disk_fields(), cpu_seconds()
while True:
    time.sleep(0.25)
    now_disk, now_cpu = disk_fields(), cpu_seconds()
    writes, sectors, busy, queued = (a - b for a, b in zip(now_disk, last_disk))
    cpu = " ".join(f"{name}={(seconds - last_cpu.get(name, seconds)) * 400:.0f}%" for name, seconds in sorted(now_cpu.items()))
    stamp = f"{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S.%f}"[:-3]
    print(f"{stamp} writes {writes} MiB {sectors * 512 / 1048576:.1f} busy {busy} queued {queued} | {cpu}", flush=True)
    last_disk, last_cpu = now_disk, now_cpu
