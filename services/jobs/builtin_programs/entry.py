"""A built-in program's catalogue entry, declared beside its code (ENTRY next to main in each module).

The programs service derives its catalogue from these (qruntime_programs.builtins): the description,
what the program returns, its time limit, and its inputs, whose names and which are required come from
main's own signature, so code and catalogue cannot disagree (catalogue_inputs raises if an input is
declared that main lacks, or main takes one that is not declared). Nothing here imports Qiskit: the
programs service reads these without it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

# main(backend, user_messenger, **inputs): the first two are the runtime's, not inputs.
_RUNTIME_PARAMETERS = ("backend", "user_messenger")


@dataclasses.dataclass(frozen=True)
class Input:
    """One declared input: its JSON type (an InputType name: STRING, INTEGER, NUMBER, BOOLEAN, ARRAY,
    OBJECT, CIRCUITS) and what it means."""

    type: str
    description: str


@dataclasses.dataclass(frozen=True)
class CatalogueEntry:
    """What users see of a built-in program."""

    id: str
    description: str
    results: str  # what main returns, as users read it
    inputs: dict[str, Input]
    max_execution_seconds: int
    typed_inputs: str = ""  # the qruntime.primitives.v1 message it also takes (CreateJobRequest.primitive_input)

    @property
    def full_description(self) -> str:
        typed = (f" Its inputs may also be sent typed, as {self.typed_inputs} in CreateJobRequest.primitive_input "
                 "(Qiskit's V2 primitives); the result is then typed too." if self.typed_inputs else "")
        return f"{self.description} Returns {self.results}{typed}"


def catalogue_inputs(entry: CatalogueEntry, main: Callable[..., Any]) -> list[tuple[str, Input, bool]]:
    """(name, declared input, required) for each input of main, in its order; ValueError when the
    declared inputs are not exactly main's."""
    parameters = [p for name, p in inspect.signature(main).parameters.items() if name not in _RUNTIME_PARAMETERS]
    names = [p.name for p in parameters]
    if set(names) != set(entry.inputs):
        raise ValueError(f"built-in program {entry.id!r}: main takes {sorted(names)}, its entry declares "
                         f"{sorted(entry.inputs)}")
    return [(p.name, entry.inputs[p.name], p.default is inspect.Parameter.empty) for p in parameters]
