"""DevicesService over a real socket, behind the kit's auth: plans, paging, errors and runs."""

from __future__ import annotations

import grpc
import pytest
import structlog
from qiskit import QuantumCircuit
from qruntime.devices.v1 import backend_pb2, devices_service_pb2_grpc
from qruntime.devices.v1 import devices_service_pb2 as pb
from qruntime.encoding import dump_circuits_qpy

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


def test_a_service_runs_bell_with_default_shots_seed_and_memory(devices, bell_qpy):
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

    request = pb.RunCircuitsRequest(backend="ibm_manila", circuits_qpy=bell_qpy, shots=500)
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
