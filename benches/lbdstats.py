"""lbd's counters on request, for the bench runners (run.py, e2e.py): a
SIGUSR1, then the JSON document lbd writes to its --stats-out file; and
the CPU the figures were taken on."""

import glob
import json
import os
import signal
import time


def request(pid, path, after_seq, exited, timeout):
    """Asks lbd (`pid`) for its counters; returns the document it writes to
    `path` once that document's `seq` is above `after_seq`. `exited()`
    returns an error text once lbd has exited, else None."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path) as f:
                d = json.load(f)
            if d["seq"] > after_seq:
                return d
        except (OSError, ValueError, KeyError):
            pass
        err = exited()
        if err:
            raise RuntimeError(err)
        time.sleep(0.02)
    raise RuntimeError("lbd gave no stats")


def cpu_description():
    """The CPU as a table's header should name it. On cloud VMs the model
    name is often only the vendor's ("AMD EPYC") for several generations,
    whose rates differ by 1.5-2x (issue 13), so the family, model and
    stepping, the clock and the caches seen by CPU 0 go with it."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first CPU's block
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
    except OSError:
        return "?"
    parts = [f"family {info.get('cpu family', '?')} model {info.get('model', '?')} stepping {info.get('stepping', '?')}"]
    if "cpu MHz" in info:
        parts.append(f"{float(info['cpu MHz']):.0f} MHz")
    caches = []
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            level, kind, size = (open(f"{d}/{n}").read().strip() for n in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            caches.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    if caches:
        parts.append(" ".join(caches))
    return f"{info.get('model name', '?')} ({'; '.join(parts)})"
