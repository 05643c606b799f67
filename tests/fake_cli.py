"""A small stand-in for an AI command-line tool, for clink's tests: `fake_cli.py MODE [PIDFILE]`.

echo:   answers with what it read on stdin (its length and text), exit 0
fail:   writes to stderr, exit 3
flood:  writes 3 MiB to stdout, exit 0
env:    writes the names of its environment variables, one a line
sleep:  starts a child that sleeps, writes "<own pid> <child pid>" to PIDFILE (or, when PIDFILE is a
        directory, to a file named by its own pid in it), then sleeps itself (both ignore
        SIGTERM: only the group's SIGKILL ends them)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def main() -> int:
    mode = sys.argv[1]
    if mode == "echo":
        text = sys.stdin.read()
        sys.stdout.write(f"FAKE-CLI read {len(text)} characters:\n{text}")
        return 0
    if mode == "fail":
        sys.stdin.read()
        sys.stderr.write("fake-cli: something went wrong\nFAKE-CLI-STDERR-TAIL\n")
        return 3
    if mode == "flood":
        block = "y" * 1023 + "\n"
        for _ in range(3 * 1024):
            sys.stdout.write(block)
        return 0
    if mode == "env":
        sys.stdout.write("\n".join(sorted(os.environ)) + "\n")
        return 0
    if mode == "sleep":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(
            [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"]
        )
        pidfile = sys.argv[2]
        if os.path.isdir(pidfile):
            pidfile = os.path.join(pidfile, str(os.getpid()))
        with open(pidfile + ".tmp", "w") as out:
            out.write(f"{os.getpid()} {child.pid}")
        os.replace(pidfile + ".tmp", pidfile)
        time.sleep(300)
        return 0
    sys.stderr.write(f"unknown mode {mode}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
