#!/usr/bin/env python3
"""How long the server lingers after a program handler has exited.

Runs `inbound.delivery.runner.run_program()` on a handler that reads the message and
takes ~20 ms (`cat > /dev/null; sleep 0.02`), and `subprocess.run()` of the same program
with the same input, interleaved; the difference of the medians is the time between the
handler's exit and the server noticing it.  (`Popen.wait(timeout)` sleep-polls, up to
50 ms between looks.)  With `--against DIR` the runner of another checkout is measured
in the same rounds.

usage: bench/handler_exit.py [ROUNDS] [--against DIR]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import PYTHON, ROOT, rounds_and_against

CHILD = """
import subprocess, sys, threading, time  # imported before the clock starts
sys.path.insert(0, sys.argv[1])
from inbound.delivery import runner
from inbound.delivery.router import Handler
handler = Handler.__new__(Handler)
handler.name, handler.path = "sink", sys.argv[2]
class Envelope:
    queue_id = "BENCH"
for _ in range(int(sys.argv[4])):
    started = time.perf_counter()
    runner.run_program(handler, Envelope(), {"PATH": "/usr/bin:/bin"}, sys.argv[3], b"", 300)
    print((time.perf_counter() - started) * 1000)
"""


def main() -> int:
    rounds, against = rounds_and_against(30)
    folder = tempfile.mkdtemp(prefix="mailserver-bench-")
    try:
        program = os.path.join(folder, "sink")
        with open(program, "w") as f:
            f.write("#!/bin/sh\ncat > /dev/null; sleep 0.02\n")
        os.chmod(program, 0o755)
        message = os.path.join(folder, "message")
        with open(message, "wb") as f:
            f.write(b"Subject: hi\r\n\r\nhello\r\n")
        checkouts = {"run_program": ROOT, **({"run_program@against": against} if against else {})}
        samples: dict[str, list[float]] = {name: [] for name in ["subprocess.run", *checkouts]}
        for _ in range(rounds):
            started = time.perf_counter()
            subprocess.run([program], input=b"Subject: hi\n\nhello\n", check=True)
            samples["subprocess.run"].append((time.perf_counter() - started) * 1000)
            for name, root in checkouts.items():
                out = subprocess.run(
                    [PYTHON, "-c", CHILD, root, program, message, "1"], capture_output=True, check=True
                ).stdout
                samples[name].append(float(out.split()[-1]))
        bare = statistics.median(samples["subprocess.run"])
        print(f"{rounds} interleaved rounds, medians; handler: cat > /dev/null; sleep 0.02")
        for name, values in samples.items():
            median = statistics.median(values)
            extra = "" if name == "subprocess.run" else f"   lingers {median - bare:5.1f} ms"
            print(f"{name:22} {median:6.1f} ms{extra}")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
