"""The suite's built-in programs, run in-process by the jobs service's runner.

Each is main(backend, user_messenger, **inputs); the programs service holds their catalogue entries
(ids, declared inputs, time limits) under the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import estimator, hello_world, sampler
from .common import PROGRAM_LOGGER, InvalidInputError, program_logger

ProgramMain = Callable[..., Any]

BUILTIN_PROGRAMS: dict[str, ProgramMain] = {
    "hello-world": hello_world.main,
    "sampler": sampler.main,
    "estimator": estimator.main,
}

__all__ = ["BUILTIN_PROGRAMS", "PROGRAM_LOGGER", "InvalidInputError", "ProgramMain", "program_logger"]
