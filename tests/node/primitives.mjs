// A Node.js client of qruntime built from proto/ alone (@grpc/grpc-js, @grpc/proto-loader): it signs in,
// runs a Bell circuit written in OpenQASM 3 through the sampler and an estimator PUB with Pauli
// observables, checks their typed results, and decodes a rich error (google.rpc.Status with ErrorInfo
// and BadRequest, read with the googleapis protos whose directory GOOGLE_PROTOS names).
//
//   QRUNTIME_URL=127.0.0.1:8443 QRUNTIME_API_KEY=... QRUNTIME_INSTANCE=crn:... GOOGLE_PROTOS=dir node primitives.mjs
//
// Prints one JSON line of what it found; exits non-zero on the first check that fails.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs"); // proto-loader's own parser, for the google.rpc error details

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../proto");
const { QRUNTIME_URL: url, QRUNTIME_API_KEY: apiKey, QRUNTIME_INSTANCE: instance, GOOGLE_PROTOS: googleProtos } =
  process.env;
const definition = protoLoader.loadSync(
  ["qruntime/auth/v1/auth_service.proto", "qruntime/jobs/v1/jobs_service.proto"],
  { includeDirs: [root, path.join(root, "third_party")], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true },
);
const qruntime = grpc.loadPackageDefinition(definition).qruntime;
const credentials = grpc.credentials.createInsecure();
const auth = new qruntime.auth.v1.AuthService(url, credentials);
const jobs = new qruntime.jobs.v1.JobsService(url, credentials);

const call = (client, method, request, metadata = new grpc.Metadata()) =>
  new Promise((resolve, reject) => client[method](request, metadata, (err, response) => (err ? reject(err) : resolve(response))));

const BELL = `OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] meas;
h q[0];
cx q[0], q[1];
meas = measure q;`;

async function waitDone(metadata, jobId) {
  for (let i = 0; i < 600; i++) {
    const { job } = await call(jobs, "GetJob", { job_id: jobId }, metadata);
    if (job.state === "JOB_STATE_DONE") return job;
    assert.ok(["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"].includes(job.state), `job ${jobId}: ${job.state} ${job.reason_message}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${jobId} did not end`);
}

// Counts of a BitArray: packed bytes [shots, ceil(num_bits / 8)], big-endian within a shot.
function counts(bits) {
  const width = Math.ceil(bits.num_bits / 8);
  const found = {};
  for (let shot = 0; shot < bits.num_shots; shot++) {
    let value = 0n;
    for (let b = 0; b < width; b++) value = (value << 8n) | BigInt(bits.packed[shot * width + b]);
    const key = value.toString(2).padStart(bits.num_bits, "0");
    found[key] = (found[key] ?? 0) + 1;
  }
  return found;
}

function richError(err) {
  const types = protobuf.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"].map((f) => path.join(googleProtos, f)));
  const Status = types.lookupType("google.rpc.Status");
  const status = Status.decode(err.metadata.get("grpc-status-details-bin")[0]);
  const out = { code: status.code, message: status.message };
  for (const detail of status.details) {
    const name = detail.type_url.split("/").pop();
    const decoded = types.lookupType(name).decode(detail.value);
    if (name === "google.rpc.ErrorInfo") Object.assign(out, { reason: decoded.reason, metadata: decoded.metadata });
    if (name === "google.rpc.BadRequest") out.fields = decoded.fieldViolations.map((v) => v.field);
  }
  return out;
}

const { token } = await call(auth, "CreateToken", { api_key: apiKey, instance });
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${token}`);
const options = { backend_name: "ibmq_qasm_simulator" };

// The sampler: a Bell circuit in OpenQASM 3, 2000 shots.
const sampled = await call(jobs, "CreateJob", {
  program_id: "sampler", options,
  primitive_input: { sampler: { pubs: [{ circuit: { qasm3: BELL }, shots: 2000 }], options: { seed: 7 } } },
}, metadata);
await waitDone(metadata, sampled.job.id);
const samplerResult = (await call(jobs, "GetJobResult", { job_id: sampled.job.id }, metadata)).primitive_result.sampler;
const [register] = samplerResult.pub_results[0].registers;
assert.equal(register.name, "meas");
assert.equal(register.bits.num_shots, 2000);
const bell = counts(register.bits);
assert.deepEqual(Object.keys(bell).sort(), ["00", "11"]);
assert.ok(bell["00"] > 850 && bell["11"] > 850, JSON.stringify(bell));

// The estimator: <ZZ>, <XX> and 0.5 <ZI> + 2 <II> of the Bell state, as a [3] array of observables.
const unmeasured = BELL.replace("bit[2] meas;\n", "").replace("\nmeas = measure q;", "");
const estimated = await call(jobs, "CreateJob", {
  program_id: "estimator", options,
  primitive_input: { estimator: { pubs: [{
    circuit: { qasm3: unmeasured },
    observables: { shape: [3], observables: [
      { paulis: ["ZZ"], coeffs: [1] }, { paulis: ["XX"], coeffs: [1] }, { paulis: ["ZI", "II"], coeffs: [0.5, 2] },
    ] },
    precision: 0.01,
  }] } },
}, metadata);
await waitDone(metadata, estimated.job.id);
const estimatorResult = (await call(jobs, "GetJobResult", { job_id: estimated.job.id }, metadata)).primitive_result.estimator;
const { evs, stds } = estimatorResult.pub_results[0];
assert.deepEqual(evs.shape, [3]);
assert.ok(Math.abs(evs.values[0] - 1) < 1e-9 && Math.abs(evs.values[1] - 1) < 1e-9, JSON.stringify(evs));
assert.ok(Math.abs(evs.values[2] - 2) < 0.06, JSON.stringify(evs)); // <ZI> = 0: 5 sigma of 0.5 * 0.01
assert.equal(estimatorResult.pub_results[0].metadata.shots, 10000);

// A rich error: malformed OpenQASM 3 in the second PUB.
let error;
try {
  await call(jobs, "CreateJob", {
    program_id: "sampler", options,
    primitive_input: { sampler: { pubs: [{ circuit: { qasm3: BELL } }, { circuit: { qasm3: "OPENQASM 3.0; qubit q; hadamard q;" } }] } },
  }, metadata);
} catch (err) {
  error = err;
}
assert.ok(error, "a malformed circuit was accepted");
assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
const rich = richError(error);
assert.equal(rich.reason, "INVALID_QASM");
assert.equal(rich.metadata.pub, "1");
assert.deepEqual(rich.fields, ["primitive_input.sampler.pubs[1].circuit.qasm3"]);

console.log(JSON.stringify({ bell, evs: evs.values, stds: stds.values, error: rich }));
process.exit(0);
