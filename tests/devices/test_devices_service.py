"""DevicesService over a real socket, behind the kit's auth: plans, paging, errors and runs."""

from __future__ import annotations

import random
import threading
import time

import grpc
import pytest
import structlog
from qiskit import QuantumCircuit
from qiskit.circuit.random import random_circuit
from qruntime.devices.v1 import backend_pb2, devices_service_pb2_grpc
from qruntime.devices.v1 import devices_service_pb2 as pb
from qruntime.encoding import dump_circuits_qpy
from systems import isa

from qruntime_devices.adapters import BackendAdapter
from qruntime_devices.servicer import backend_message
from qruntime_kit.errors import from_rpc_error

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow


SIMULATORS = [
    "ibmq_qasm_simulator", "simulator_extended_stabilizer", "simulator_mps", "simulator_stabilizer",
    "simulator_statevector",
]
SYSTEMS = ["ibm_lima", "ibm_manila", "ibm_sherbrooke", "ibm_torino"]


class Caller:
    """A DevicesService stub that sends one principal's token with every call."""

    def __init__(self, suite, token: str) -> None:
        self._channel = suite.channel()
        self._stub = devices_service_pb2_grpc.DevicesServiceStub(self._channel)
        self._metadata = suite.metadata(token)

    def __getattr__(self, method):
        return lambda request: getattr(self._stub, method)(request, metadata=self._metadata, timeout=60)

    def error(self, method, request):
        with pytest.raises(grpc.RpcError) as caught:
            getattr(self, method)(request)
        return from_rpc_error(caught.value)


@pytest.fixture
def devices(start_suite):
    suite = start_suite("devices")
    standard_key, standard_instance = suite.make_user(plan="standard", instance_name="standard")
    callers = {
        "lite": Caller(suite, suite.token()),
        "standard": Caller(suite, suite.token(standard_key, standard_instance)),
        "service": Caller(suite, suite.token(suite.service_key)),
    }
    yield callers
    for caller in callers.values():
        caller._channel.close()


@pytest.fixture
def bell_qpy(bell) -> bytes:
    return dump_circuits_qpy(bell)


def names(response) -> list[str]:
    return [b.name for b in response.backends]


def test_each_plan_lists_its_kind_of_backend_and_services_list_all(devices):
    lite = devices["lite"].ListBackends(pb.ListBackendsRequest())
    assert names(lite) == SIMULATORS
    assert {b.kind for b in lite.backends} == {backend_pb2.BACKEND_KIND_SIMULATOR}
    assert names(devices["standard"].ListBackends(pb.ListBackendsRequest())) == SYSTEMS
    everything = devices["service"].ListBackends(pb.ListBackendsRequest())
    assert names(everything) == sorted(SIMULATORS + SYSTEMS)
    assert not everything.next_page_token
    for backend in everything.backends:
        assert backend.status == backend_pb2.BackendStatus(operational=True, status_message="active")
        assert backend.configuration.num_qubits >= 5 and backend.description


def test_pages_follow_opaque_tokens(devices):
    seen, token = [], ""
    while True:
        page = devices["service"].ListBackends(pb.ListBackendsRequest(page_size=2, page_token=token))
        assert len(page.backends) <= 2
        seen += names(page)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(SIMULATORS + SYSTEMS)
    err = devices["lite"].error("ListBackends", pb.ListBackendsRequest(page_token="garbage!"))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    err = devices["lite"].error("ListBackends", pb.ListBackendsRequest(page_size=-1))
    assert err.reason == "INVALID_PAGE_SIZE"


def test_get_backend_checks_the_plan(devices):
    backend = devices["standard"].GetBackend(pb.GetBackendRequest(name="ibm_manila")).backend
    assert backend.kind == backend_pb2.BACKEND_KIND_PHYSICAL
    assert len(backend.configuration.coupling_map) > 0
    err = devices["lite"].error("GetBackend", pb.GetBackendRequest(name="ibm_manila"))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "BACKEND_NOT_IN_PLAN")
    assert err.metadata == {"backend": "ibm_manila", "plan": "lite"}
    err = devices["standard"].error("GetBackend", pb.GetBackendRequest(name="simulator_mps"))
    assert err.metadata == {"backend": "simulator_mps", "plan": "standard"}
    err = devices["lite"].error("GetBackend", pb.GetBackendRequest(name="ibm_nowhere"))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "BACKEND_NOT_FOUND")
    err = devices["lite"].error("GetBackend", pb.GetBackendRequest())
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.field_violations[0][0] == "name"


def test_backend_properties(devices):
    request = pb.GetBackendPropertiesRequest(name="ibm_lima")
    properties = devices["standard"].GetBackendProperties(request).properties
    assert len(properties.qubits) == 5 and properties.gates and properties.HasField("last_update_time")
    ideal = devices["lite"].GetBackendProperties(pb.GetBackendPropertiesRequest(name="ibmq_qasm_simulator"))
    assert ideal.properties == backend_pb2.BackendProperties()
    err = devices["lite"].error("GetBackendProperties", pb.GetBackendPropertiesRequest(name="ibm_lima"))
    assert err.reason == "BACKEND_NOT_IN_PLAN"


def test_only_services_run_circuits(devices, bell_qpy):
    request = pb.RunCircuitsRequest(backend="ibmq_qasm_simulator", circuits_qpy=bell_qpy)
    for plan in ("lite", "standard"):
        err = devices[plan].error("RunCircuits", request)
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_ONLY")


def test_a_service_runs_bell_with_default_shots_seed_and_memory(devices, bell, bell_qpy):
    service = devices["service"]
    request = pb.RunCircuitsRequest(backend="ibmq_qasm_simulator", circuits_qpy=bell_qpy, seed=5, memory=True,
                                    job_id="job-1")
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        (result,) = service.RunCircuits(request).results
    assert set(result.counts) == {"00", "11"} and sum(result.counts.values()) == 1024
    assert len(result.memory) == 1024 and list(result.register_names) == ["c"]
    assert service.RunCircuits(request).results[0] == result
    about_the_run = [line for line in logs if line["event"].startswith("run ")]
    assert len(about_the_run) == 3 and all(line["job_id"] == "job-1" for line in about_the_run)

    request = pb.RunCircuitsRequest(backend="ibm_manila", circuits_qpy=dump_circuits_qpy(isa(bell, "ibm_manila")),
                                    shots=500)
    emulated = service.RunCircuits(request)
    counts = emulated.results[0].counts
    assert sum(counts.values()) == 500 and counts.get("00", 0) + counts.get("11", 0) > 400


@pytest.mark.parametrize(
    ("request_fields", "code", "reason", "field"),
    [
        ({"backend": ""}, grpc.StatusCode.INVALID_ARGUMENT, "BACKEND_MISSING", "backend"),
        ({"backend": "ibm_nowhere"}, grpc.StatusCode.NOT_FOUND, "BACKEND_NOT_FOUND", None),
        ({"circuits_qpy": b"nonsense"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QPY", "circuits_qpy"),
        ({"shots": 100_001}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SHOTS", "shots"),
        ({"backend": "ibm_lima", "shots": -3}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SHOTS", "shots"),
        ({"backend": "ibm_lima", "circuits_qpy": "wide"},
         grpc.StatusCode.INVALID_ARGUMENT, "CIRCUIT_TOO_WIDE", "circuits_qpy"),
        ({"circuits_qpy": "silent"}, grpc.StatusCode.INVALID_ARGUMENT, "NO_MEASUREMENTS", "circuits_qpy"),
    ],
)
def test_bad_runs_are_refused_with_typed_errors_and_checks_say_the_same(
    devices, bell_qpy, request_fields, code, reason, field
):
    wide = QuantumCircuit(6)
    wide.measure_all()
    silent = QuantumCircuit(1)
    silent.x(0)
    fields = {"backend": "ibmq_qasm_simulator", "circuits_qpy": bell_qpy, **request_fields}
    fields["circuits_qpy"] = {"wide": dump_circuits_qpy(wide), "silent": dump_circuits_qpy(silent)}.get(
        fields["circuits_qpy"], fields["circuits_qpy"]
    )
    err = devices["service"].error("RunCircuits", pb.RunCircuitsRequest(**fields))
    assert (err.code, err.reason) == (code, reason)
    if field:
        assert [f for f, _ in err.field_violations] == [field]
    checked = devices["service"].error("CheckCircuits", pb.CheckCircuitsRequest(**fields))  # the same answer
    assert (checked.code, checked.reason, checked.field_violations) == (code, reason, err.field_violations)


def run_circuits_lines(logs: list[dict]) -> list[dict]:
    """The rpc lines of RunCircuits calls among logs, once there is one: the server writes a call's line
    after it has answered."""
    deadline = time.monotonic() + 5
    while not (lines := [line for line in logs if line["event"] == "rpc" and line["method"].endswith("/RunCircuits")]
               ) and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines


def test_a_run_asked_only_if_quick_runs_small_ideal_circuits_and_nothing_else(devices, bell, bell_qpy):
    service = devices["service"]
    quick = pb.RunCircuitsRequest(backend="ibmq_qasm_simulator", circuits_qpy=bell_qpy, seed=5, only_if_quick=True,
                                  job_id="job-quick")
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        ran = service.RunCircuits(quick)
        said = run_circuits_lines(logs)
    assert ran == service.RunCircuits(pb.RunCircuitsRequest(
        backend="ibmq_qasm_simulator", circuits_qpy=bell_qpy, seed=5))  # the same run
    # A quick run takes milliseconds: its call's one line says what ran, once it has.
    assert not [line for line in logs if line["event"].startswith("run ")]
    assert len(said) == 1 and said[0]["only_if_quick"] and said[0]["code"] == "OK"
    assert (said[0]["backend"], said[0]["job_id"]) == ("ibmq_qasm_simulator", "job-quick")
    assert (said[0]["circuits"], said[0]["shots"], said[0]["memory"]) == (1, 1024, "448 B")  # simulation memory
    assert said[0]["waited_ms"] >= 0 and said[0]["run_ms"] >= 0 and said[0]["seed"] == 5
    wide = QuantumCircuit(14)
    wide.h(range(14))
    wide.measure_all()
    long = QuantumCircuit(2)
    for _ in range(1001):
        long.x(0)
    long.measure_all()
    not_quick = [
        {"circuits_qpy": dump_circuits_qpy(wide)},  # 14 qubits
        {"circuits_qpy": dump_circuits_qpy(long)},  # 1,002 instructions
        {"backend": "simulator_mps"},  # not a state vector
        {"backend": "ibm_manila", "circuits_qpy": dump_circuits_qpy(isa(bell, "ibm_manila"))},  # a system
    ]
    for fields in not_quick:
        request = pb.RunCircuitsRequest(**{"backend": "ibmq_qasm_simulator", "circuits_qpy": bell_qpy,
                                           "only_if_quick": True, **fields})
        with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
            err = service.error("RunCircuits", request)
            refused = run_circuits_lines(logs)
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_QUICK"), fields
        assert len(refused) == 1 and "run_ms" not in refused[0], fields  # nothing ran
    # Bad circuits get the usual answer, quick or not.
    silent = QuantumCircuit(1)
    silent.x(0)
    err = service.error("RunCircuits", pb.RunCircuitsRequest(
        backend="ibmq_qasm_simulator", circuits_qpy=dump_circuits_qpy(silent), only_if_quick=True))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NO_MEASUREMENTS")


def test_a_backend_reports_its_system_time_limit_even_when_its_configuration_leaves_it_out():
    class PluggedIn(BackendAdapter):  # hardware whose configuration names no max_execution_time
        name, kind = "acme", "physical"

        def configuration(self):
            return backend_pb2.BackendConfiguration(num_qubits=5, max_shots=1000, max_experiments=10)

        def properties(self):
            return backend_pb2.BackendProperties()

        def execute(self, circuits, shots, seed, memory):
            raise NotImplementedError

    adapter = PluggedIn()
    backend = backend_message("acme", adapter, backend_pb2.BackendStatus(operational=True))
    assert backend.configuration.max_execution_time.seconds == adapter.max_execution_time == 8 * 3600
    assert backend.configuration.num_qubits == 5 and backend.kind == backend_pb2.BACKEND_KIND_PHYSICAL


def test_emulated_systems_say_from_which_snapshot(devices):
    sherbrooke = devices["standard"].GetBackend(pb.GetBackendRequest(name="ibm_sherbrooke")).backend
    assert sherbrooke.configuration.num_qubits == 127 and "emulated" in sherbrooke.description
    assert sherbrooke.emulation.source == "qiskit_ibm_runtime.fake_provider.backends.sherbrooke.fake_sherbrooke" \
        ".FakeSherbrooke"
    assert sherbrooke.emulation.snapshot_time.ToDatetime().year >= 2024
    simulator = devices["lite"].GetBackend(pb.GetBackendRequest(name="simulator_mps")).backend
    assert not simulator.HasField("emulation")


def test_only_operators_take_a_backend_out_of_service_and_back(devices):
    # "lite" is the bootstrap owner, one of the deployment's operators; "standard" is not one, and the
    # jobs service ("service") may not make this call at all.
    down = pb.UpdateBackendStatusRequest(name="simulator_mps", operational=False, reason="recalibrating\n  today")
    err = devices["standard"].error("UpdateBackendStatus", down)
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_ONLY")
    err = devices["service"].error("UpdateBackendStatus", down)
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CALL_NOT_ALLOWED")
    operator = devices["lite"]
    too_long = pb.UpdateBackendStatusRequest(name="simulator_mps", reason="x" * 201)
    assert operator.error("UpdateBackendStatus", too_long).reason == "REASON_TOO_LONG"
    unknown = pb.UpdateBackendStatusRequest(name="nope")
    assert operator.error("UpdateBackendStatus", unknown).reason == "BACKEND_NOT_FOUND"

    status = operator.UpdateBackendStatus(down).backend.status
    assert (status.operational, status.status_message) == (False, "maintenance: recalibrating today")
    seen = devices["lite"].GetBackend(pb.GetBackendRequest(name="simulator_mps")).backend.status
    assert seen == status  # users see why
    chosen = {devices["lite"].SelectBackend(pb.SelectBackendRequest()).backend.name for _ in range(40)}
    assert "simulator_mps" not in chosen
    up = pb.UpdateBackendStatusRequest(name="simulator_mps", operational=True)
    assert operator.UpdateBackendStatus(up).backend.status.status_message == "active"
    # An operator tends backends outside their own instance's plan too.
    sherbrooke = pb.UpdateBackendStatusRequest(name="ibm_sherbrooke", operational=True)
    assert operator.UpdateBackendStatus(sherbrooke).backend.name == "ibm_sherbrooke"


def test_select_backend_picks_fairly_among_the_least_busy_that_fit_the_plan_and_the_job(devices):
    picks = [devices["lite"].SelectBackend(pb.SelectBackendRequest()) for _ in range(120)]
    # Not the stabilizer simulators: Clifford circuits only, or approximate and slow for the others.
    universal = set(SIMULATORS) - {"simulator_stabilizer", "simulator_extended_stabilizer"}
    counts = {name: sum(p.backend.name == name for p in picks) for name in universal}
    assert sum(counts.values()) == len(picks)
    assert min(counts.values()) >= 20, counts  # about 40 each; below 20 happens once in ~10⁵ runs
    assert "picked at random" in picks[0].reason and "0 jobs queued + 0 running (0 runs pending)" in picks[0].reason
    standard = devices["standard"].SelectBackend(pb.SelectBackendRequest(min_num_qubits=100))
    assert standard.backend.name in ("ibm_sherbrooke", "ibm_torino")
    queued = {"ibmq_qasm_simulator": 2, "simulator_mps": 1}
    only = devices["lite"].SelectBackend(pb.SelectBackendRequest(queued_jobs=queued))
    assert only.backend.name == "simulator_statevector" and "tied" not in only.reason
    # A job running on a backend keeps it busy between its runs (no run pending there now).
    running = devices["lite"].SelectBackend(pb.SelectBackendRequest(
        queued_jobs={"ibmq_qasm_simulator": 1}, running_jobs={"simulator_statevector": 2, "simulator_mps": 2}))
    assert running.backend.name == "ibmq_qasm_simulator"
    assert "1 jobs queued + 0 running (0 runs pending)" in running.reason
    err = devices["lite"].error("SelectBackend", pb.SelectBackendRequest(min_num_qubits=10_000_000))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_BACKEND_AVAILABLE")
    err = devices["lite"].error("SelectBackend", pb.SelectBackendRequest(min_num_qubits=-1))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    err = devices["lite"].error("SelectBackend", pb.SelectBackendRequest(running_jobs={"simulator_mps": -1}))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SELECTION")


def test_select_backend_counts_the_runs_a_backend_has_under_real_load(devices):
    """Real runs hold simulator_statevector (a 22-qubit circuit takes seconds here): least busy avoids it
    while they wait or run, and picks it again once they are done."""
    heavy = random_circuit(22, 12, measure=True, seed=4)
    qpy = dump_circuits_qpy([heavy])
    runs = [
        pb.RunCircuitsRequest(backend="simulator_statevector", circuits_qpy=qpy, shots=10, seed=s) for s in (1, 2, 3)
    ]
    threads = [threading.Thread(target=devices["service"].RunCircuits, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    try:
        load = lambda: devices["lite"].GetBackend(  # noqa: E731
            pb.GetBackendRequest(name="simulator_statevector")).backend.status
        deadline = time.monotonic() + 30
        while load().pending_jobs < 3:
            assert time.monotonic() < deadline, "the runs never queued"
            time.sleep(0.05)
        assert load().running_jobs >= 1
        queued = {name: random.choice([0, 1]) for name in ("ibmq_qasm_simulator", "simulator_mps")}
        for _ in range(20):
            chosen = devices["lite"].SelectBackend(pb.SelectBackendRequest(queued_jobs=queued))
            assert chosen.backend.name != "simulator_statevector"
    finally:
        for thread in threads:
            thread.join(timeout=120)
    assert load().pending_jobs == 0
    everything_queued = {name: 5 for name in SIMULATORS if name != "simulator_statevector"}
    chosen = devices["lite"].SelectBackend(pb.SelectBackendRequest(queued_jobs=everything_queued))
    assert chosen.backend.name == "simulator_statevector"


def ghz_with_t(width: int) -> QuantumCircuit:
    """Wide but barely entangled, and not Clifford: matrix product states hold it, state vectors cannot."""
    circuit = QuantumCircuit(width)
    circuit.h(0)
    for qubit in range(width - 1):
        circuit.cx(qubit, qubit + 1)
    circuit.t(range(width))
    circuit.measure_all()
    return circuit


def test_select_backend_with_the_jobs_circuits_picks_the_least_busy_that_accepts_them(devices, bell_qpy):
    check = pb.CheckCircuitsRequest(circuits_qpy=dump_circuits_qpy(ghz_with_t(40)), shots=100)
    # simulator_mps is the busiest, yet the only one of the three that can hold 40 such qubits.
    queued = {"simulator_mps": 5}
    chosen = devices["lite"].SelectBackend(pb.SelectBackendRequest(queued_jobs=queued, checks=[check]))
    assert chosen.backend.name == "simulator_mps"
    assert "ibmq_qasm_simulator refused the circuits (CIRCUIT_NEEDS_TOO_MUCH_MEMORY)" in chosen.reason
    assert "simulator_statevector refused the circuits" in chosen.reason
    # Without the circuits the choice ignores them (it would be refused when checked).
    assert devices["lite"].SelectBackend(pb.SelectBackendRequest(queued_jobs=queued)).backend.name != "simulator_mps"
    # What none accepts is the caller's error, each backend's refusal named; the failing check is said.
    wide = pb.CheckCircuitsRequest(circuits_qpy=dump_circuits_qpy(ghz_with_t(70)))
    bell = pb.CheckCircuitsRequest(circuits_qpy=bell_qpy)
    err = devices["lite"].error("SelectBackend", pb.SelectBackendRequest(checks=[bell, wide]))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NO_BACKEND_RUNS_CIRCUITS")
    assert err.metadata["check"] == "1" and set(err.metadata["backends"].split(",")) == {
        "ibmq_qasm_simulator", "simulator_mps", "simulator_statevector"}
    assert "simulator_mps: " in err.message and "CIRCUIT_TOO_WIDE" in str(err.field_violations)
