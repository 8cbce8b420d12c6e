"""Loading the benchmark scripts: files under ``benchmarks/``, not a package, so tests load them by path."""
from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


def load_benchmark(filename: str) -> ModuleType:
    """The script ``benchmarks/<filename>`` as a module (registered in ``sys.modules``, where
    dataclasses look their module up)."""
    name = f"{os.path.splitext(filename)[0]}_bench"
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, filename))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
