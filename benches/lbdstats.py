"""lbd's counters on request, for the bench runners (run.py, e2e.py): a
SIGUSR1, then the JSON document lbd writes to its --stats-out file."""

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
