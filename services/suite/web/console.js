// The web console: an Alpine.js component over the REST API (/api/v1, transcoded from proto/).
// Names of states, kinds and list routes come from the API document (/api/openapi.json), not from here.
"use strict";

const IAM_GRANT = "urn:ibm:params:oauth:grant-type:apikey";
const FINAL = ["JOB_STATE_DONE", "JOB_STATE_ERROR", "JOB_STATE_CANCELLED"];
// Routes acting on one row of a list that live outside the list's own path (the document cannot say so).
const RELATED = { "/api/v1/admin/users": ["/api/v1/admin/members/{user}"] };
// The row fields that may hold the value of a route's path variable, in the order tried.
const KEY_FIELDS = (variable) => [variable, `${variable}.id`, "id", "crn", "name"];
let watching = null; // the AbortController of the job stream being read (kept out of Alpine's reactive state)

// A server-sent events stream read with fetch (EventSource cannot send an Authorization header).
async function readEvents(response, onEvent, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));  // a block of comments alone is a keep-alive
    }
  }
}

// The first object in a result whose keys are bitstrings and values numbers: a sampler's counts.
function findCounts(value) {
  if (!value || typeof value !== "object") return null;
  const entries = Object.entries(value);
  if (!Array.isArray(value) && entries.length && entries.every(([k, v]) => /^(0x[0-9a-f]+|[01]+)$/.test(k) && typeof v === "number")) {
    return value;
  }
  for (const key of ["counts", "quasi_dists"]) {
    if (key in value) { const found = findCounts(value[key]); if (found) return found; }
  }
  for (const [, v] of entries) { const found = findCounts(v); if (found) return found; }
  return null;
}

document.addEventListener("alpine:init", () => {
  Alpine.data("qconsole", () => ({
    token: sessionStorage.getItem("qruntime.token") || "",
    accountToken: sessionStorage.getItem("qruntime.accountToken") || "",
    instance: sessionStorage.getItem("qruntime.instance") || "",
    instanceName: sessionStorage.getItem("qruntime.instanceName") || "",
    apiKey: "",
    error: "",
    view: "Jobs",
    document: null,
    programs: [], backends: [], jobs: [], examples: {}, instances: [],
    filters: { state: "", program: "", tag: "" },
    newJob: { program_id: "", backend: "", params: "{}" },
    selected: null, logs: [], result: null, histogram: [], live: false,
    generic: null,

    async init() {
      this.document = await (await fetch("/api/openapi.json")).json();
      this.examples = await (await fetch("/static/examples.json")).json();
      if (this.token) { await this.loadInstances(); await this.load(); }
    },

    get states() {
      const schema = this.document?.components.schemas["qruntime.jobs.v1.JobState"];
      return (schema?.enum || []).filter((s) => !s.endsWith("UNSPECIFIED"));
    },
    // The list routes (GET, no path variable) of the document under a prefix: sessions, admin.
    lists(prefix) {
      return Object.entries(this.document?.paths || {})
        .filter(([path, ops]) => path.startsWith(prefix) && !path.includes("{") && !path.includes(":") && ops.get)
        .map(([path, ops]) => ({ path, title: path.slice(prefix.length).replace(/_/g, " ") || ops.get.summary }));
    },
    get tabs() {
      const tabs = ["Jobs", "Backends", "Programs"];
      if (this.lists("/api/v1/sessions").length) tabs.push("Sessions");
      if (this.accountToken && this.lists("/api/v1/admin/").length) tabs.push("Admin");
      return tabs;
    },

    async api(method, path, body, token) {
      const headers = { Authorization: `Bearer ${token || this.token}` };
      if (!token) headers["Service-CRN"] = this.instance;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const data = await response.json();
      if (!response.ok) {
        if (response.status === 401) this.signOut();
        throw new Error(`${data.error.reason}: ${data.error.message}`);
      }
      return data;
    },
    async attempt(action) {
      this.error = "";
      try { return await action(); } catch (err) { this.error = err.message; }
    },

    // Sign in as IBM Cloud does: the API key alone gives a token for the account, and every call names
    // its instance in Service-CRN (the front door exchanges the token for that instance's). A user of
    // several accounts gets a token of the named instance alone (no admin views, no instance switching).
    async signIn() {
      await this.attempt(async () => {
        const form = (extra) => new URLSearchParams({ grant_type: IAM_GRANT, apikey: this.apiKey, ...extra });
        let response = await fetch("/identity/token", { method: "POST", body: form({}) });
        let data = await response.json();
        if (!response.ok && data.error.reason === "ACCOUNT_AMBIGUOUS") {
          response = await fetch("/identity/token", { method: "POST", body: form({ instance: this.instance }) });
          data = await response.json();
        }
        if (!response.ok) throw new Error(`${data.error.reason}: ${data.error.message}`);
        this.apiKey = "";
        await this.useInstance(this.instance, data.access_token);
      });
    },
    // Make an instance (CRN or name) the one every call names; the token is checked against it first.
    async useInstance(instance, token = this.token) {
      await this.attempt(async () => {
        const response = await fetch("/api/v1/instance", { headers: { Authorization: `Bearer ${token}`, "Service-CRN": instance } });
        const data = await response.json();
        if (!response.ok) throw new Error(`${data.error.reason}: ${data.error.message}`);
        this.stopWatching();
        const isAccountToken = !JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).ins;
        Object.assign(this, { token, accountToken: isAccountToken ? token : "", instance: data.instance.crn,
                              instanceName: data.instance.name, selected: null, generic: null });
        for (const key of ["token", "accountToken", "instance", "instanceName"]) {
          sessionStorage.setItem(`qruntime.${key}`, this[key]);
        }
        await this.loadInstances();
        await this.load();
      });
    },
    // The account's instances, to switch among with the one token (any member may list them).
    async loadInstances() {
      this.instances = this.accountToken
        ? (await this.api("GET", "/api/v1/admin/instances", undefined, this.accountToken).catch(() => ({ instances: [] }))).instances
        : [];
    },
    signOut() {
      this.stopWatching();
      sessionStorage.clear();
      Object.assign(this, { token: "", accountToken: "", selected: null, jobs: [], generic: null, view: "Jobs",
                            instances: [] });
    },

    async load() {
      await this.attempt(async () => {
        const [programs, backends] = await Promise.all([this.api("GET", "/api/v1/programs"), this.api("GET", "/api/v1/backends")]);
        this.programs = programs.programs;
        this.backends = backends.backends;
        this.newJob.program_id ||= this.programs[0]?.id || "";
        await this.loadJobs();
      });
    },
    show(tab) {
      this.view = tab;
      this.generic = null;
      if (tab === "Backends") this.load();
      if (tab === "Sessions" || tab === "Admin") {
        const choices = this.lists(tab === "Admin" ? "/api/v1/admin/" : "/api/v1/sessions");
        this.generic = { title: tab, choices, path: "", rows: [], columns: [], account: tab === "Admin",
                         form: [], values: {}, created: "", formTitle: "", actions: [], pending: null };
        this.loadList(choices[0]);
      }
    },
    // The fields of a schema a form can fill: scalars and enums, one level into nested messages.
    formFields(schema, prefix = "", depth = 0) {
      const resolve = (s) => (s?.$ref ? this.document.components.schemas[s.$ref.split("/").pop()] : s?.allOf ? resolve(s.allOf[0]) : s);
      return Object.entries(resolve(schema)?.properties || {}).flatMap(([name, property]) => {
        const field = resolve(property) || {};
        const path = prefix + name;
        if (field.enum) return [{ path, kind: "enum", options: field.enum, description: property.description || "" }];
        if (field.type === "object" && field.properties && depth < 1) return this.formFields(field, `${path}.`, depth + 1);
        if (["string", "boolean", "integer"].includes(field.type) && field.format !== "date-time") {
          return [{ path, kind: field.type, description: property.description || "" }];
        }
        return [];
      });
    },
    async submitForm() {
      await this.attempt(async () => {
        const body = {};
        for (const field of this.generic.form) {
          const value = this.generic.values[field.path];
          if (value === "" || value === undefined || value === false) continue;
          const parts = field.path.split(".");
          let node = body;
          for (const part of parts.slice(0, -1)) node = node[part] ||= {};
          node[parts[parts.length - 1]] = value;
        }
        const answer = await this.api("POST", this.generic.path, body, this.generic.account ? this.accountToken : undefined);
        this.generic.created = JSON.stringify(answer, null, 2);  // e.g. a new API key, shown once
        await this.loadList({ path: this.generic.path, keepCreated: true });
      });
    },
    // The actions on one row of a list, from the document: DELETE <list>/{var} and POST <list>/{var}:verb.
    rowActions(path) {
      return Object.entries(this.document?.paths || {}).flatMap(([template, ops]) => {
        const related = (RELATED[path] || []).includes(template);
        if (!related && !template.startsWith(`${path}/{`)) return [];
        const match = /^\{(\w+)\}(?::(\w+))?$/.exec(template.slice(template.indexOf("{")));
        if (!match) return [];
        const [, variable, verb] = match;
        const action = (method, label, op) => ({ method, label, template, variable, summary: op.summary });
        if (verb && ops.post) return [action("POST", verb, ops.post)];
        if (!verb && ops.delete) return [action("DELETE", related ? "remove" : "delete", ops.delete)];
        return [];
      });
    },
    rowKey(row, variable) {
      const field = KEY_FIELDS(variable).find((f) => typeof row[f] === "string" && row[f]);
      return field ? row[field] : "";
    },
    // Nothing is deleted or disabled without a second click on the confirmation.
    ask(action, row) {
      const value = this.rowKey(row, action.variable);
      this.generic.pending = { action, value, label: row.name || row.email || row["user.email"] || value };
    },
    async confirmAction() {
      const { action, value } = this.generic.pending;
      this.generic.pending = null;
      await this.attempt(async () => {
        await this.api(action.method, action.template.replace(`{${action.variable}}`, encodeURIComponent(value)),
                       undefined, this.generic.account ? this.accountToken : undefined);
        await this.loadList({ path: this.generic.path, keepCreated: true });
      });
    },
    async loadList(choice) {
      await this.attempt(async () => {
        const post = this.document.paths[choice.path]?.post;
        const schema = post?.requestBody?.content["application/json"]?.schema;
        const form = schema ? this.formFields(schema) : [];
        if (!choice.keepCreated) {
          Object.assign(this.generic, { form, values: Object.fromEntries(form.map((f) => [f.path, ""])), created: "",
                                        formTitle: post ? post.summary : "" });
        }
        const data = await this.api("GET", choice.path, undefined, this.generic.account ? this.accountToken : undefined);
        // Rows of the first list in the answer, nested objects flattened one level ("user.email").
        const rows = (Object.values(data).find(Array.isArray) || []).map((row) => Object.fromEntries(
          Object.entries(row).flatMap(([k, v]) => (v && typeof v === "object" && !Array.isArray(v)
            ? Object.entries(v).map(([k2, v2]) => [`${k}.${k2}`, v2]) : [[k, v]]))));
        const columns = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => typeof r[k] !== "object" || r[k] === null)))];
        Object.assign(this.generic, { path: choice.path, rows, columns: columns.slice(0, 8),
                                      actions: this.rowActions(choice.path), pending: null });
      });
    },

    async loadJobs() {
      await this.attempt(async () => {
        const terms = [];
        if (this.filters.state) terms.push(`state = ${this.filters.state}`);
        if (this.filters.program) terms.push(`program = ${JSON.stringify(this.filters.program)}`);
        if (this.filters.tag) terms.push(`tags:${this.filters.tag}`);
        const query = new URLSearchParams({ page_size: "50", filter: terms.join(" AND ") });
        this.jobs = (await this.api("GET", `/api/v1/jobs?${query}`)).jobs;
      });
    },
    useExample(name) {
      const example = this.examples[name];
      if (!example) return;
      this.newJob.program_id = example.program_id;
      this.newJob.params = JSON.stringify(example.params);
    },
    async createJob() {
      await this.attempt(async () => {
        let params;
        try { params = JSON.parse(this.newJob.params || "{}"); } catch (err) { throw new Error(`Inputs: ${err.message}`); }
        const { job } = await this.api("POST", "/api/v1/jobs", { program_id: this.newJob.program_id, backend: this.newJob.backend, params });
        this.jobs.unshift(job);
        await this.openJob(job.id, job);
      });
    },

    stopWatching() {
      if (watching) watching.abort();
      watching = null;
      this.live = false;
    },
    async openJob(id, known) {
      this.stopWatching();
      await this.attempt(async () => {
        this.selected = known || (await this.api("GET", `/api/v1/jobs/${id}`)).job;  // then the stream moves it on
        this.logs = []; this.result = null; this.histogram = [];
        const watch = (watching = new AbortController());
        // Follow the job's stream to its end; a stream that drops is asked again from the last event seen,
        // which the service replays from without gaps or repeats.
        const progress = { sequence: 0, ended: false };
        for (let attempt = 0; !progress.ended && !watch.signal.aborted && attempt < 30; attempt++) {
          if (attempt) await new Promise((resume) => setTimeout(resume, 1000));
          const response = await fetch(`/api/v1/jobs/${id}/events?after_sequence=${progress.sequence}`, {
            headers: { Authorization: `Bearer ${this.token}`, "Service-CRN": this.instance }, signal: watch.signal,
          }).catch(() => null);
          if (!response) continue;
          if (!response.ok) throw new Error((await response.json()).error.message);
          this.live = true;
          await readEvents(response, (name, data) => this.onEvent(id, name, data, progress), watch.signal).catch(() => {});
        }
        if (watching === watch) this.live = false;
      });
    },
    onEvent(id, name, data, progress) {
      if (!this.selected || this.selected.id !== id) return;
      if (name === "error") {  // the service's own refusal ends it; an outage (5xx) is asked again
        progress.ended = data.error.code < 500;
        this.error = `${data.error.reason}: ${data.error.message}`;
        return;
      }
      if (name === "end") { progress.ended = true; this.live = false; this.finish(id); return; }
      for (const event of data.events) {
        progress.sequence = Math.max(progress.sequence, Number(event.sequence));
        if (event.state_change) {
          this.selected.state = event.state_change.state;
          this.selected.reason_message = event.state_change.reason_message || this.selected.reason_message;
          const row = this.jobs.find((j) => j.id === id);
          if (row) row.state = event.state_change.state;
        } else if (event.log) {
          this.logs.push(`${event.log.time.slice(11, 19)} ${this.short(event.log.level)} ${event.log.message}`);
        }
      }
    },
    async finish(id) {
      this.selected = (await this.api("GET", `/api/v1/jobs/${id}`)).job;
      if (this.selected.state !== "JOB_STATE_DONE") return;
      const { result } = await this.api("GET", `/api/v1/jobs/${id}/results`);
      this.result = JSON.parse(result);
      const counts = findCounts(this.result) || {};
      const top = Math.max(...Object.values(counts), 0) || 1;
      this.histogram = Object.entries(counts).sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => ({
        key, value: Number.isInteger(value) ? value : value.toFixed(3), width: (100 * value) / top }));
    },
    async cancelJob() {
      await this.attempt(async () => {
        const { job } = await this.api("POST", `/api/v1/jobs/${this.selected.id}/cancel`);
        this.selected.state = job.state;
      });
    },
    async deleteJob() {
      await this.attempt(async () => {
        await this.api("DELETE", `/api/v1/jobs/${this.selected.id}`);
        this.jobs = this.jobs.filter((j) => j.id !== this.selected.id);
        this.selected = null;
      });
    },

    final: (state) => FINAL.includes(state),
    short: (name) => (name || "").replace(/^(JOB_STATE|BACKEND_KIND|INPUT_TYPE|LOG_LEVEL)_/, ""),
    when: (time) => (time ? new Date(time).toLocaleString() : ""),
    pretty: (value) => JSON.stringify(value, null, 2),
    cell: (value) => (value === null || value === undefined ? "" : String(value)),
  }));
});
