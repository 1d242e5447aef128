"""The public programs shipped with the suite, seeded into the store at every start.

Each is defined once, beside its code, in the jobs service's qruntime_jobs.builtin_programs (its ENTRY):
this catalogue is derived from those entries, its inputs from the programs' own signatures. Their ids
carry no random suffix, so they can never clash with an uploaded program's id.
"""

from __future__ import annotations

from qruntime_jobs.builtin_programs import CATALOGUE, CatalogueEntry, catalogue_inputs

from .model import InputType, Program, ProgramInput, Runtime, Visibility


def catalogue_program(entry: CatalogueEntry, main) -> Program:
    """The catalogue's Program of a built-in program."""
    return Program(
        id=entry.id,
        name=entry.id,
        description=entry.full_description,
        inputs=tuple(ProgramInput(name, InputType(declared.type), required, declared.description)
                     for name, declared, required in catalogue_inputs(entry, main)),
        max_execution_seconds=entry.max_execution_seconds,
        visibility=Visibility.PUBLIC,
        runtime=Runtime.BUILTIN,
    )


BUILTIN_PROGRAMS: tuple[Program, ...] = tuple(catalogue_program(*CATALOGUE[i]) for i in CATALOGUE)
HELLO_WORLD, SAMPLER, ESTIMATOR = (next(p for p in BUILTIN_PROGRAMS if p.id == i)
                                   for i in ("hello-world", "sampler", "estimator"))
