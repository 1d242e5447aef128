"""Hostile uploaded programs against the whole suite: each fails cleanly with a clear job reason while
the suite keeps serving everyone else. Real bubblewrap, real processes, real limits.

One uploaded program carries every attack; its `attack` input picks one. An attack the sandbox stops
raises inside the program, so its job ends ERROR PROGRAM_ERROR with the operating system's refusal as
the reason message; attacks on resources end with the reason of the limit they met.
"""

from __future__ import annotations

import time

import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qruntime.encoding import dumps, loads
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2 as pb
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

from qruntime_kit.sandbox import sandbox_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sandbox_available() is not None, reason=f"no sandbox here: {sandbox_available()}"),
]

HOSTILE = r'''
import ctypes, os, signal, socket, sys, time

libc = ctypes.CDLL(None, use_errno=True)


def syscall(number, *args):
    if libc.syscall(number, *args) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return "it worked"


def read(path):
    with open(path, "rb") as f:
        return f.read(100).decode(errors="replace")


def connect(host, port):
    with socket.create_connection((host, port), timeout=2):
        return "connected"


def fork_bomb():
    while True:
        os.fork()


def fill_disk():
    block = b"x" * (1 << 20)
    for i in range(100_000):
        with open(f"/scratch/fill-{i}", "wb") as f:
            for _ in range(64):
                f.write(block)


def spin():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        pass


def print_a_gigabyte():
    line = "y" * 1023 + "\n"
    for _ in range(1 << 20):
        sys.stdout.write(line)


def flood(user_messenger):
    for i in range(100_000):
        user_messenger.publish(i)


def main(backend, user_messenger, attack, target=""):
    attacks = {
        "read_database": lambda: read(target),
        "read_data_dir": lambda: os.listdir(target),
        "read_host_environment": lambda: read("/proc/1/environ"),
        "inherited_descriptors": lambda: sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "connect_outside": lambda: connect("192.0.2.1", 80),
        "connect_service_port": lambda: connect("127.0.0.1", int(target)),
        "connect_postgres": lambda: connect("127.0.0.1", 5432),
        "io_uring_setup": lambda: syscall(425, 8, ctypes.create_string_buffer(120)),
        "ptrace": lambda: syscall(101, 16, 1, 0, 0),  # PTRACE_ATTACH to pid 1
        "tiocsti": lambda: syscall(16, 0, 0x5412, ctypes.byref(ctypes.c_char(b"x"))),
        "unshare": lambda: syscall(272, 0x10000000),  # CLONE_NEWUSER
        "mount": lambda: syscall(165, b"none", b"/scratch", b"tmpfs", 0, None),
        "fork_bomb": fork_bomb,
        "allocate_50_gb": lambda: len(bytearray(50 << 30)),
        "fill_disk": fill_disk,
        "spin": spin,
        "print_a_gigabyte": print_a_gigabyte,
        "flood_interim_results": lambda: flood(user_messenger),
        "kill_its_host": lambda: os.kill(os.getpid(), signal.SIGKILL),
    }
    return attacks[attack]()
'''


@pytest.fixture(scope="module")
def suite(start_module_suite):
    return start_module_suite("programs", "devices", "jobs", warm_sandboxed_hosts=2, workers=4, max_attempts=1,
                              program_memory_bytes=768 << 20)


@pytest.fixture(scope="module")
def user(suite):
    channel = suite.channel()
    metadata = suite.metadata()
    programs = programs_service_pb2_grpc.ProgramsServiceStub(channel)
    program = programs.CreateProgram(programs_service_pb2.CreateProgramRequest(program=program_pb2.Program(
        name="hostile", data=HOSTILE, max_execution_time=duration_pb2.Duration(seconds=20),
        inputs=[program_pb2.ProgramInput(name="attack", type=program_pb2.INPUT_TYPE_STRING, required=True),
                program_pb2.ProgramInput(name="target", type=program_pb2.INPUT_TYPE_STRING)],
    )), metadata=metadata, timeout=30).program
    yield jobs_service_pb2_grpc.JobsServiceStub(channel), metadata, program.id
    channel.close()


def run_all(user, attacks: dict[str, str]) -> dict[str, job_pb2.Job]:
    """Start every attack at once, then wait for all of them."""
    jobs, metadata, program_id = user
    started = {}
    for attack, target in attacks.items():
        request = pb.CreateJobRequest(program_id=program_id, inputs=dumps({"attack": attack, "target": target}))
        started[attack] = jobs.CreateJob(request, metadata=metadata, timeout=30).job.id
    ended = {}
    deadline = time.monotonic() + 180
    while len(ended) < len(started):
        assert time.monotonic() < deadline, f"still running: {set(started) - set(ended)}"
        for attack, job_id in started.items():
            if attack not in ended:
                job = jobs.GetJob(pb.GetJobRequest(job_id=job_id), metadata=metadata, timeout=10).job
                if job.state in (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_ERROR, job_pb2.JOB_STATE_CANCELLED):
                    ended[attack] = job
        time.sleep(0.2)
    return ended


def result(user, job: job_pb2.Job):
    jobs, metadata, _ = user
    return loads(jobs.GetJobResult(pb.GetJobResultRequest(job_id=job.id), metadata=metadata, timeout=10).result)


def refused(job: job_pb2.Job, *words: str) -> None:
    assert (job.state, job_pb2.JobReason.Name(job.reason)) == (job_pb2.JOB_STATE_ERROR, "JOB_REASON_PROGRAM_ERROR"), \
        job.reason_message
    assert any(word in job.reason_message for word in words), job.reason_message


def test_the_sandbox_lets_nothing_out(suite, user):
    ended = run_all(user, {
        "read_database": str(suite.data_dir / "jobs.db"),
        "read_data_dir": str(suite.data_dir),
        "read_host_environment": "",
        "inherited_descriptors": "",
        "connect_outside": "",
        "connect_service_port": suite.address.rsplit(":", 1)[1],
        "connect_postgres": "",
        "io_uring_setup": "",
        "ptrace": "",
        "tiocsti": "",
        "unshare": "",
        "mount": "",
    })
    refused(ended["read_database"], "No such file or directory")
    refused(ended["read_data_dir"], "No such file or directory")
    # The sandbox's pid 1 is bubblewrap's own, started with an empty environment: readable, and empty.
    assert ended["read_host_environment"].state == job_pb2.JOB_STATE_DONE, ended["read_host_environment"]
    environment = result(user, ended["read_host_environment"])
    assert "QRUNTIME" not in environment and suite.service_key not in environment
    assert result(user, ended["inherited_descriptors"]) in ([0, 1, 2, 3], [0, 1, 2, 3, 4])  # + listdir's own
    for attack in ("connect_outside", "connect_service_port", "connect_postgres"):
        refused(ended[attack], "Network is unreachable", "Connection refused", "Cannot assign requested address")
    for attack in ("io_uring_setup", "ptrace", "tiocsti", "unshare", "mount"):
        refused(ended[attack], "Operation not permitted", "Function not implemented")


def test_attacks_on_resources_meet_their_limits_and_the_suite_serves_others(suite, user, bell):
    jobs, metadata, _ = user
    channel = suite.channel()
    health = health_pb2_grpc.HealthStub(channel)
    bystander = jobs.CreateJob(pb.CreateJobRequest(program_id="sampler", inputs=dumps({"circuits": [bell]})),
                               metadata=metadata, timeout=30).job
    ended = run_all(user, {attack: "" for attack in (
        "fork_bomb", "allocate_50_gb", "fill_disk", "spin", "print_a_gigabyte", "flood_interim_results",
        "kill_its_host")})
    started = time.monotonic()
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
    assert time.monotonic() - started < 1
    channel.close()
    bystander = jobs.GetJob(pb.GetJobRequest(job_id=bystander.id), metadata=metadata, timeout=10).job
    assert bystander.state == job_pb2.JOB_STATE_DONE

    def reason(attack: str) -> str:
        return job_pb2.JobReason.Name(ended[attack].reason).removeprefix("JOB_REASON_")

    assert reason("fork_bomb") in ("PROGRAM_ERROR", "OUT_OF_MEMORY", "WORKER_CRASHED"), ended["fork_bomb"]
    assert "Resource temporarily unavailable" in ended["fork_bomb"].reason_message or reason("fork_bomb") != \
        "PROGRAM_ERROR"
    assert reason("allocate_50_gb") in ("PROGRAM_ERROR", "OUT_OF_MEMORY")
    assert "MemoryError" in ended["allocate_50_gb"].reason_message or reason("allocate_50_gb") == "OUT_OF_MEMORY"
    assert reason("fill_disk") in ("PROGRAM_ERROR", "OUT_OF_MEMORY"), ended["fill_disk"].reason_message
    assert reason("spin") == "TIME_LIMIT_EXCEEDED"
    assert reason("print_a_gigabyte") == "OUTPUT_LIMIT_EXCEEDED"
    assert reason("flood_interim_results") == "OUTPUT_LIMIT_EXCEEDED"
    assert (reason("kill_its_host"), ended["kill_its_host"].attempts) == ("WORKER_CRASHED", 1)  # max_attempts=1

