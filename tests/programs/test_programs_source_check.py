"""The source check on its own: real worker processes, real limits, real kills."""

from __future__ import annotations

import asyncio
import time

import pytest

from qruntime_kit.errors import Internal, ResourceExhausted
from qruntime_programs.source_check import CheckLimits, SourceChecker, _verdict

GOOD = "def main(backend, user_messenger, **inputs):\n    return 1\n"
CPU_BURNER = ("x = " + "lambda: " * 95 + "1\n") * 1150


def problems(source: str, **limits) -> list[str]:
    return asyncio.run(SourceChecker(CheckLimits(**limits)).problems(source))


def test_the_worker_gives_the_compilers_verdict():
    assert problems(GOOD) == []
    assert problems("def main(:\n") == ["does not compile: invalid syntax (line 1)"]
    assert problems("async def main(backend, user_messenger):\n    pass\n") == [
        "main must be a plain function (def main(backend, user_messenger, **inputs)), not async"]


@pytest.mark.slow
def test_a_check_past_its_wall_clock_is_killed_and_refused():
    started = time.monotonic()
    assert problems(CPU_BURNER, seconds=1) == ["checking it took longer than 1 s, the limit: simplify the source"]
    assert time.monotonic() - started < 3


def test_a_check_compiles_the_program_and_never_runs_it(tmp_path):
    probe = tmp_path / "ran"
    source = f"open({str(probe)!r}, 'w').write('ran')\n" + GOOD
    assert problems(source) == []
    assert not probe.exists()


@pytest.mark.slow
def test_checks_past_the_waiting_room_are_refused_as_busy():
    async def scenario():
        checker = SourceChecker(CheckLimits(seconds=1, workers=1, waiting=1))
        running = [asyncio.create_task(checker.problems(CPU_BURNER)) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(ResourceExhausted) as caught:
            await checker.problems(GOOD)
        assert caught.value.reason == "SOURCE_CHECKS_BUSY"
        results = await asyncio.gather(*running)
        assert all("longer than 1 s" in r[0] for r in results)
        assert await checker.problems(GOOD) == []  # room again once they are done

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "reply",
    [b"", b"not json", b'{"problems": "x"}', b'{"problems": [1]}', b'{"problems": ["x"]' + b" " * 70000 + b"}",
     b'{"problems": [' + b'"x",' * 11 + b'"x"]}', b"[" * 100_000],
)
def test_anything_but_a_small_verdict_from_a_worker_is_refused(reply):
    with pytest.raises(Internal) as caught:
        _verdict(reply)
    assert caught.value.reason == "SOURCE_CHECK_FAILED"
