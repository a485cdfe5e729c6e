"""Fault injection for tests/distributed, loaded by putting this folder on PYTHONPATH.

In the process whose RANK equals TUNEFORGE_TEST_FAULT_RANK, once tuneforge.llm.recipe is
imported, Recipe.train is replaced: TUNEFORGE_TEST_FAULT=raise raises a RuntimeError,
=kill sends the process SIGKILL (as the kernel's out-of-memory killer would). Production code
has no test hooks; this only exists on the test's PYTHONPATH.
"""

import importlib.abc
import importlib.machinery
import os
import signal
import sys

TARGET = "tuneforge.llm.recipe"


def _faulty_train(self):
    if os.environ.get("TUNEFORGE_TEST_FAULT") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("injected failure")


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            module.Recipe.train = _faulty_train

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("TUNEFORGE_TEST_FAULT") and os.environ.get("RANK") == os.environ.get("TUNEFORGE_TEST_FAULT_RANK"):
    sys.meta_path.insert(0, _Hook())
