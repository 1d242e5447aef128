"""The built-in programs are each defined once, code and catalogue entry together
(qruntime_jobs.builtin_programs), and the programs service's catalogue is derived from them."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from qruntime_jobs.builtin_programs import BUILTIN_PROGRAMS, CATALOGUE, CatalogueEntry, catalogue_inputs
from qruntime_jobs.builtin_programs.entry import Input
from qruntime_programs.builtins import BUILTIN_PROGRAMS as CATALOGUE_PROGRAMS


def test_the_catalogue_lists_exactly_the_programs_the_jobs_service_runs() -> None:
    assert [p.id for p in CATALOGUE_PROGRAMS] == list(BUILTIN_PROGRAMS) == ["hello-world", "sampler", "estimator"]


@pytest.mark.parametrize("program", CATALOGUE_PROGRAMS, ids=lambda p: p.id)
def test_each_catalogue_entry_agrees_with_its_programs_code(program) -> None:
    entry, main = CATALOGUE[program.id]
    parameters = {name: p for name, p in inspect.signature(main).parameters.items()
                  if name not in ("backend", "user_messenger")}
    assert [i.name for i in program.inputs] == list(parameters)
    for declared in program.inputs:
        assert declared.required == (parameters[declared.name].default is inspect.Parameter.empty)
        assert declared.type == entry.inputs[declared.name].type and declared.description
    assert program.max_execution_seconds == entry.max_execution_seconds
    assert entry.description in program.description and entry.results in program.description
    if program.id in ("sampler", "estimator"):
        assert f"qruntime.primitives.v1.{program.id.capitalize()}Input" in program.description


def test_an_entry_that_disagrees_with_its_code_is_refused() -> None:
    def main(backend, user_messenger, circuits, shots=1):
        return None

    entry = CatalogueEntry("x", "d", "r", {"circuits": Input("CIRCUITS", "c")}, 60)
    with pytest.raises(ValueError, match="main takes"):
        catalogue_inputs(entry, main)


def test_the_catalogue_is_read_without_importing_qiskit() -> None:
    code = "import sys, qruntime_programs.builtins; print('qiskit' in sys.modules)"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert ran.stdout.strip() == "False"
