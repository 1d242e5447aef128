"""The source check's worker: compiles one uploaded program in a process of its own and says what is
wrong with it.

source_check.py runs this file as `python -I -S source_worker.py` under a memory cap, a CPU cap and a
wall clock (qruntime_kit.workers.spawn). The compiler is what a hostile source attacks (deep nesting
that exhausts the C stack, inputs that make it burn CPU or memory for seconds), so it runs here, where
such a source costs only this process. It imports nothing but the modules every interpreter loads at
start (os, sys): -I -S leave site-packages and our own code out, and even json, re and socket would
triple its start-up (about 100 ms on a busy machine), paid by every upload.

Channel (fd 3, the kit's framing: a 4-byte big-endian length, then that many bytes): the service
sends one frame, the UTF-8 source; this process answers one frame, JSON {"problems": [str, ...]}
(empty when the source is a valid program), and exits.
"""

from __future__ import annotations

import os
import sys

CHANNEL_FD = 3
HEADER_BYTES = 4
MAX_SOURCE_BYTES = 4 << 20  # well above the service's own cap (1 MiB): only a guard against garbage
MAX_PROBLEM_CHARS = 300
# Code flags (inspect.CO_*, not imported: inspect pulls in much of the standard library).
_CO_FUNCTION = 0x1 | 0x2  # CO_OPTIMIZED | CO_NEWLOCALS: a function body, not a class body
_CO_ASYNC = 0x80 | 0x200  # CO_COROUTINE | CO_ASYNC_GENERATOR


def source_problems(source: str) -> list[str]:
    """What is wrong with source as a program: it must compile and define a top-level
    `def main(backend, user_messenger, **inputs)`. Empty when nothing is."""
    if not source.strip():
        return ["required: the program's Python source"]
    try:
        # Compile the text, not an ast.parse tree: the check needs the compiler's verdict anyway, and
        # building Python objects for every node costs 5-7 times the time and twice the memory.
        code = compile(source, "<program>", "exec", dont_inherit=True)
    except SyntaxError as err:
        return [_clip(f"does not compile: {err.msg} (line {err.lineno})")]
    except RecursionError:
        return ["does not compile: it is nested too deeply for the compiler"]
    except MemoryError:
        return ["does not compile: it is nested too deeply or is too large for the compiler"]
    except (ValueError, OverflowError) as err:
        return [_clip(f"does not compile: {err}")]
    return _main_problems(code, source)


def _main_problems(code, source: str) -> list[str]:
    # A function defined in the module's own body is a code object among the module's constants.
    # Its def (or first decorator) starts in column 0 exactly when it is a statement of the module
    # body itself, not of an if, try, with or loop at top level.
    lines = None
    kinds = set()
    for const in code.co_consts:
        if not (hasattr(const, "co_name") and const.co_name == "main" and const.co_flags & _CO_FUNCTION):
            continue
        # The compiler's line ends only (str.splitlines knows more, and would miscount).
        lines = lines or source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        first = lines[const.co_firstlineno - 1].lstrip("\f") if const.co_firstlineno <= len(lines) else ""
        if first.startswith(("def", "async", "@")):
            kinds.add("async" if const.co_flags & _CO_ASYNC else "plain")
    if "plain" in kinds:
        return []
    if "async" in kinds:
        return ["main must be a plain function (def main(backend, user_messenger, **inputs)), not async"]
    return ["must define a top-level function main(backend, user_messenger, **inputs)"]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 1] + "…"


def _json(problems: list[str]) -> bytes:
    """{"problems": [...]} as JSON: quotes, backslashes, control characters and lone surrogates (which
    UTF-8 cannot carry) escaped."""

    def string(text: str) -> str:
        return '"' + "".join(f"\\u{ord(c):04x}" if c < " " or c in '"\\' or "\ud800" <= c <= "\udfff" else c
                             for c in text) + '"'

    return ('{"problems": [' + ", ".join(map(string, problems)) + "]}").encode()


def _read(size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(CHANNEL_FD, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the service closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def main() -> int:
    size = int.from_bytes(_read(HEADER_BYTES), "big")
    if size > MAX_SOURCE_BYTES:
        return 2
    reply = _json(source_problems(_read(size).decode("utf-8")))
    frame = len(reply).to_bytes(HEADER_BYTES, "big") + reply
    while frame:
        frame = frame[os.write(CHANNEL_FD, frame):]
    return 0


if __name__ == "__main__":
    sys.exit(main())
