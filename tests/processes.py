"""Driving a real ``samplescope`` process the way a user does (for the fault suite)."""

from __future__ import annotations

import json
import signal
import subprocess


def interrupt_after(proc: subprocess.Popen, n_lines: int) -> tuple[list[dict], list[dict], bytes]:
    """Read ``n_lines`` JSON lines from ``proc``'s stdout, press Ctrl+C (SIGINT), and return
    (the lines read before, the JSON lines printed after, stderr) once it has exited."""
    printed: list[dict] = []
    while len(printed) < n_lines:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode(errors="replace")
        printed.append(json.loads(line))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return printed, [json.loads(x) for x in out.decode().splitlines()], err
