"""The suite's built-in programs, run by the jobs service's runner.

Each module holds one program's code, main(backend, user_messenger, **inputs), and its catalogue
entry (ENTRY: description, results, inputs, time limit), from which the programs service derives its
catalogue (CATALOGUE). Importing this package does not import Qiskit; running a program does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import estimator, hello_world, sampler
from .common import PROGRAM_LOGGER, InvalidInputError, program_logger
from .entry import CatalogueEntry, catalogue_inputs

ProgramMain = Callable[..., Any]

_MODULES = (hello_world, sampler, estimator)
BUILTIN_PROGRAMS: dict[str, ProgramMain] = {module.ENTRY.id: module.main for module in _MODULES}
CATALOGUE: dict[str, tuple[CatalogueEntry, ProgramMain]] = {module.ENTRY.id: (module.ENTRY, module.main)
                                                            for module in _MODULES}



def import_qiskit() -> None:
    """Import what the programs import when they run (a program host does it before its job comes)."""
    import qiskit.circuit.random  # noqa: F401 - hello-world's circuits
    import qiskit.transpiler  # noqa: F401


__all__ = ["BUILTIN_PROGRAMS", "CATALOGUE", "PROGRAM_LOGGER", "CatalogueEntry", "InvalidInputError", "ProgramMain",
           "catalogue_inputs", "import_qiskit", "program_logger"]
