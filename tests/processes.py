"""Helpers for tests that run kbqa as a real child process (a server)."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 20) -> None:
    """Ctrl-C the process as a user would, and kill it only if it does not exit within `timeout`."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
