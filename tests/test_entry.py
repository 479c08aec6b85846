"""The command's entry point: a stop signal while the command line is still being imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

# The signal arrives exactly while `structsent.cli` is being imported (an import hook raises it).
SIGNAL_DURING_THE_IMPORTS = """
import importlib.abc, runpy, signal, sys

class SignalOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "structsent.cli":
            sys.meta_path.remove(self)
            signal.raise_signal(signal.{name})
        return None

# As a command started from a terminal has them (a background job of a shell inherits both ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
sys.meta_path.insert(0, SignalOnImport())
sys.argv = ["structsent", "label", "--help"]
runpy.run_module("structsent", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(("name", "status", "said"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_stop_signal_while_the_command_line_loads_ends_it_in_one_line(name, status, said):
    """It printed a KeyboardInterrupt traceback (SIGINT) or died of the signal (-15), nothing said."""
    proc = subprocess.run([sys.executable, "-c", SIGNAL_DURING_THE_IMPORTS.replace("{name}", name)],
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr.strip()) == (status, f"structsent: {said}"), proc.stderr[-2000:]


def test_the_signal_handler_is_the_default_again_once_loaded():
    """The commands install their own handlers; none of the entry point's is left behind."""
    code = ("import signal, structsent._entry as e, structsent.cli as c; c.main = lambda: "
            "print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL) or 0; raise SystemExit(e.main())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]
