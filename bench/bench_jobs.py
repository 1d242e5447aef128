"""The jobs service at scale, each part against a baseline measured in the same run.

- throughput: Bell sampler jobs end to end (create, follow, result) from 1, 8 and 64 client threads
  for a fixed time, against the unary-call ceiling of a bare gRPC echo server (another process, the
  same client threads) — how much of what gRPC alone can do a whole durable job keeps.
- listing: 100,000 stored jobs; a filtered ListJobs page of 100 through the service, against the
  same page without a filter (p50 over many calls); and successive pages, each read once.
- fan-out: Bell job latency while 1,000 clients watch a long job (WatchJob), against the same with
  nobody watching: segments of --rounds jobs, crowded ones between alone ones, the median ratio of each
  crowded segment to the alone ones either side (the machine's speed drifts), and the suite's CPU.

    .venv/bin/python -W ignore bench/bench_jobs.py [--seconds 10] [--only throughput,listing,fanout]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from echo import UNARY as ECHO
from echo import echo_server

CLIENTS = (1, 8, 64)
SHOTS = 1024
STORED_JOBS = 100_000
WATCHERS = 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def suite(data_dir: Path, **env: str) -> Iterator:
    from qruntime_suite import launch

    # Lazy simulation workers: the devices service's background warm-up would run during the measurements.
    extra = {f"QRUNTIME_{k.upper()}": v for k, v in {"warm_up": "false", **env}.items()}
    with launch.running(launch.embedded(data_dir, extra_env=extra)) as running:
        yield running


def client(running):
    from qruntime import IBMRuntimeService

    boot = running.bootstrap
    return IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=running.url)


def sustained(call: Callable[[], object], clients: int, seconds: float) -> float:
    """Calls per second that `clients` threads complete, each calling in a loop for `seconds`."""
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            call()
            counts[i] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    return sum(counts) / (time.monotonic() - started)


# -- throughput ------------------------------------------------------------------------------

def echo_ceiling(seconds: float) -> dict[int, float]:
    with echo_server() as (address, _):
        echo = grpc.insecure_channel(address).unary_unary(ECHO)
        payload = b"x" * 600  # about a CreateJob request with a Bell circuit
        echo(payload)
        return {n: sustained(lambda: echo(payload, timeout=10), n, seconds) for n in CLIENTS}


def throughput(tmp: Path, seconds: float) -> None:
    from qruntime import ReferenceCircuits

    ceiling = echo_ceiling(seconds)
    with suite(tmp / "throughput", workers="8") as running:
        service, circuit = client(running), ReferenceCircuits.bell()

        def job() -> object:
            return service.run("sampler", {"circuits": circuit, "shots": SHOTS},
                               {"backend_name": "ibmq_qasm_simulator"}).result()

        for _ in range(5):
            job()
        jobs = {n: sustained(job, n, seconds) for n in CLIENTS}
    print(f"\n## throughput: Bell sampler jobs end to end for {seconds:g} s, against a gRPC echo server's unary calls")
    print(f"{'clients':>8}{'echo calls/s':>15}{'jobs/s':>10}{'jobs / echo':>13}")
    for n in CLIENTS:
        print(f"{n:>8}{ceiling[n]:>15.0f}{jobs[n]:>10.1f}{jobs[n] / ceiling[n]:>13.3f}")


# -- listing ---------------------------------------------------------------------------------

def fill_store(data_dir: Path, instance: str, count: int) -> None:
    """count ended jobs straight into the suite's jobs database, as a long-used service would hold."""
    import datetime as dt

    import sqlalchemy as sa

    from qruntime_jobs.store import JobStore, event_table, job_table, new_job_id, tag_table

    store = JobStore(f"sqlite:///{data_dir / 'jobs.db'}")
    programs, states = ("sampler", "estimator", "hello-world"), ("DONE", "DONE", "ERROR", "CANCELLED")
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    with store._engine.begin() as conn:
        for offset in range(0, count, 5000):
            jobs, events, tags = [], [], []
            for i in range(offset, min(count, offset + 5000)):
                job_id, created = new_job_id(), start + dt.timedelta(seconds=i * 20)
                jobs.append({"id": job_id, "instance": instance, "owner": "bench", "program_id": programs[i % 3],
                             "runtime": "BUILTIN", "backend": "ibmq_qasm_simulator", "state": states[i % 4],
                             "reason": "", "reason_message": "", "inputs": '{"circuits": "..."}',
                             "log_level": "INFO", "max_execution_seconds": 10800.0, "create_time": created,
                             "start_time": created, "end_time": created, "trace_id": "", "attempts": 1,
                             "program_version": 0, "events": 1, "usage_seconds": 0.01})
                events.append({"job_id": job_id, "number": 1, "time": created, "kind": "STATE", "state": "QUEUED",
                               "reason": "", "attempt": 0, "level": "", "text": ""})
                if i % 10 == 0:
                    tags.append({"job_id": job_id, "tag": f"exp-{i % 100}", "instance": instance,
                                 "create_time": created})  # the job's, as JobStore writes its tags
            conn.execute(job_table.insert(), jobs)
            conn.execute(event_table.insert(), events)
            conn.execute(tag_table.insert(), tags)
        conn.execute(sa.text("ANALYZE"))
    store.close()


def listing(tmp: Path, rounds: int = 300) -> None:
    from qruntime.jobs.v1 import jobs_service_pb2 as pb

    data_dir = tmp / "listing"
    with suite(data_dir) as running:  # started once, so that it creates its tables and the instance
        instance = running.bootstrap["instance"]
    fill_store(data_dir, instance, STORED_JOBS)
    with suite(data_dir) as running:
        transport = client(running)._transport

        def page(filter_text: str, token: str = "") -> tuple[float, str]:
            started = time.perf_counter()
            response = transport.call(transport.jobs.ListJobs,
                                      pb.ListJobsRequest(page_size=100, filter=filter_text, page_token=token))
            assert len(response.jobs) == 100, len(response.jobs)
            return (time.perf_counter() - started) * 1000, response.next_page_token

        filters = {"no filter (baseline)": ""} | {text: text for text in (
            "state = DONE AND program = sampler", "tags:exp-40",
            'state IN (ERROR, CANCELLED) AND create_time < "2099-01-01T00:00:00Z"')}
        timings = {}
        for name, text in filters.items():
            for _ in range(10):
                page(text)
            timings[name] = [page(text)[0] for _ in range(rounds)]
        # The same page again and again is what a console polling its first page asks; a client going
        # through its history asks each page once (no page read before: nothing the service kept helps).
        timings["no filter, successive pages, each once"], token = [], ""
        for _ in range(rounds):
            took, token = page("", token)
            timings["no filter, successive pages, each once"].append(took)
    base = statistics.median(timings["no filter (baseline)"])
    print(f"\n## listing: one ListJobs page of 100 of {STORED_JOBS:,} stored jobs, {rounds} calls each")
    print(f"{'filter':<72}{'p50 ms':>8}{'p95 ms':>8}{'p50 / unfiltered':>18}")
    for name, values in timings.items():
        p50 = statistics.median(values)
        print(f"{name:<72}{p50:>8.2f}{percentile(values, 0.95):>8.2f}{p50 / base:>18.2f}")


# -- fan-out ---------------------------------------------------------------------------------

def _watchers(url: str, token: str, count: int, commands, events) -> None:
    """count WatchJob streams of one job, in their own process, opened when sent the job's id and closed
    on "close" (each answered once done), counting the events they receive; "" ends them."""
    from qruntime.jobs.v1 import jobs_service_pb2 as pb
    from qruntime.jobs.v1 import jobs_service_pb2_grpc

    async def watch_all() -> None:
        loop = asyncio.get_running_loop()
        async with grpc.aio.insecure_channel(url) as channel:
            stub = jobs_service_pb2_grpc.JobsServiceStub(channel)
            metadata = (("authorization", f"Bearer {token}"),)
            while job_id := await loop.run_in_executor(None, commands.recv):
                heard = asyncio.Semaphore(0)

                async def one(job_id: str = job_id, heard: asyncio.Semaphore = heard) -> None:
                    first = True  # its history replayed (the job is young: from the watch's own cache), then live
                    async for response in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=metadata):
                        with events.get_lock():
                            events.value += len(response.events)
                        if first:
                            first = False
                            heard.release()

                tasks = [asyncio.create_task(one()) for _ in range(count)]
                with contextlib.suppress(TimeoutError):  # each has heard of an event: all are following
                    async with asyncio.timeout(30):
                        for _ in range(count):
                            await heard.acquire()
                commands.send("opened")
                await loop.run_in_executor(None, commands.recv)  # "close"
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                commands.send("closed")

    asyncio.run(watch_all())


def logged(service, job_id: str) -> int:
    """How many lines the job has logged (so far): that it runs, and how fast."""
    from qruntime.jobs.v1 import jobs_service_pb2 as pb

    transport = service._transport
    return len(transport.call(transport.jobs.ListJobLogs, pb.ListJobLogsRequest(job_id=job_id, page_size=5000)).entries)


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used (Linux: /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


FANOUT_SEGMENTS = 10  # crowded segments of `rounds` Bell jobs each, between alone ones (eleven)


def fanout(tmp: Path, rounds: int) -> None:
    """Bell job latency in segments of `rounds` jobs, alternately with nobody watching and with WATCHERS
    following a long job: alone, crowded, alone, ..., alone. The machine's speed drifts (other work shares
    it), so each crowded segment is compared with the alone segments on either side of it, and the ratio
    reported is the median of those comparisons."""
    from qruntime import ReferenceCircuits

    segments = FANOUT_SEGMENTS
    with suite(tmp / "fanout") as running:
        service, circuit = client(running), ReferenceCircuits.bell()

        def latencies(count: int) -> list[float]:
            values = []
            for _ in range(count):
                started = time.perf_counter()
                service.run("sampler", {"circuits": circuit, "shots": SHOTS},
                            {"backend_name": "ibmq_qasm_simulator"}).result()
                values.append((time.perf_counter() - started) * 1000)
            return values

        # A long job that logs and publishes all along runs in every segment: only who watches it differs.
        # A job may publish 1,000 interim results (one an iteration), so a fresh one is started now and then.
        watched = [None, 0.0]

        def watched_job():
            job, since = watched
            if job is None or time.monotonic() - since > 20 or job.status().final:  # some 600 events at most
                if job is not None and not job.status().final:
                    job.cancel()
                job = service.run("hello-world", {"iterations": 1000}, {"backend_name": "simulator_statevector"})
                while (status := job.status()) != "RUNNING" and not status.final:
                    time.sleep(0.05)
                time.sleep(0.5)  # its start (a program host taken, its first circuit) behind it
                watched[:] = [job, time.monotonic()]
            return job

        def answer(expected: str) -> None:
            if not commands.poll(120) or commands.recv() != expected:
                raise RuntimeError(f"the watchers did not answer {expected!r}")

        spawn = multiprocessing.get_context("spawn")
        commands, theirs = spawn.Pipe()
        events = spawn.Value("q", 0)
        process = spawn.Process(target=_watchers, daemon=True, args=(
            running.url, service._transport.tokens.token(), WATCHERS, theirs, events))
        process.start()
        latencies(10)
        watched_job()
        suite_pid, cpu = running.processes["suite"].pid, {"alone": [0.0, 0.0], "crowded": [0.0, 0.0]}

        def segment(kind: str) -> list[float]:
            """rounds Bell jobs, and the suite process's CPU time and the wall time they took."""
            cpu_before, wall_before = cpu_seconds(suite_pid), time.monotonic()
            values = latencies(rounds)
            cpu[kind][0] += cpu_seconds(suite_pid) - cpu_before
            cpu[kind][1] += time.monotonic() - wall_before
            return values

        alone, crowded, received, lines = [segment("alone")], [], 0, 0
        started = time.monotonic()
        for _ in range(segments):
            job = watched[0]
            commands.send(job.job_id)
            answer("opened")
            time.sleep(0.5)  # the watchers' start-up (their calls, the first messages) behind them
            received_before, logged_before = events.value, logged(service, job.job_id)
            crowded.append(segment("crowded"))
            received += events.value - received_before
            lines += logged(service, job.job_id) - logged_before
            if job.status().final:
                print("(warning: the watched job ended during a crowded segment)")
            commands.send("close")
            answer("closed")
            time.sleep(0.5)
            job = watched_job()  # a fresh one, if need be, before an alone segment: both see the same
            alone.append(segment("alone"))
        took = time.monotonic() - started
        commands.send("")
        if not watched[0].status().final:
            watched[0].cancel()
        process.join(30)
        process.kill()
    ratios = sorted(statistics.median(c) / statistics.median(a + b)
                    for c, a, b in zip(crowded, alone, alone[1:], strict=False))
    every_alone, every_crowded = sum(alone, []), sum(crowded, [])
    a, c = statistics.median(every_alone), statistics.median(every_crowded)
    print(f"\n## fan-out: Bell sampler job latency while {WATCHERS} clients watch a long job that runs beside "
          f"it ({segments} segments of {rounds} jobs crowded, {segments + 1} alone, interleaved, {took:.0f} s)")
    print(f"{'':<28}{'p50 ms':>8}{'p95 ms':>8}{'p50 / alone':>13}")
    print(f"{'nobody watching':<28}{a:>8.2f}{percentile(every_alone, 0.95):>8.2f}{1:>13.2f}")
    print(f"{f'{WATCHERS} watching':<28}{c:>8.2f}{percentile(every_crowded, 0.95):>8.2f}{c / a:>13.2f}")
    print(f"crowded / alone, segment by segment (each against the alone segments either side): median "
          f"{statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}")
    print(f"the suite process's CPU: {cpu['alone'][0] / cpu['alone'][1]:.2f} cores nobody watching, "
          f"{cpu['crowded'][0] / cpu['crowded'][1]:.2f} cores {WATCHERS} watching")
    print(f"(while crowded the watched job logged {lines} lines, and each watcher received "
          f"{received / WATCHERS:,.0f} events)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput measurement")
    parser.add_argument("--rounds", type=int, default=100, help="jobs per latency measurement (fan-out: per segment)")
    parser.add_argument("--only", default="throughput,listing,fanout")
    args = parser.parse_args()
    parts = args.only.split(",")
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        if "throughput" in parts:
            throughput(Path(tmp), args.seconds)
        if "listing" in parts:
            listing(Path(tmp))
        if "fanout" in parts:
            fanout(Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
