"""Signing in as IBM Cloud users do: one token from POST /identity/token with the API key alone, and
the instance named on every call in the Service-CRN header (CRN or name), against real servers."""

from __future__ import annotations

import time

import httpx
import pytest
from test_rest_api import error_of

from qruntime_auth.keys import key_id_of
from qruntime_suite.rest import IAM_GRANT

pytestmark = pytest.mark.slow  # a suite with worker processes per module


def member_of_two_instances(rest, tag: str) -> tuple[str, str, dict[str, str]]:
    """A user who is a plain member of an account: Manager on "alpha", Reader on "beta", no role on
    "gamma". Returns (API key, user id, instance name -> CRN)."""
    store = rest.suite.auth_store
    account = store.create_account(f"account-{tag}", store.create_user(f"owner-{tag}@example.org"))
    user = store.create_user(f"member-{tag}@example.org")
    store.invite(account, user)
    store.answer_invitation(account, user, True)
    crns = {}
    for name, role in (("alpha", "manager"), ("beta", "reader"), ("gamma", None)):
        row = store.create_instance(account, name, "lite")
        crns[name] = row["crn"]
        if role:
            store.create_policy(account, "user", user, row["id"], role)
    return store.create_user_key(user)[0], user, crns


def test_one_token_from_the_api_key_alone_serves_each_instance_named_in_service_crn(rest):
    key, _, crns = member_of_two_instances(rest, "two")
    token = rest.token(key)
    http = httpx.Client(base_url=rest.url, timeout=60, headers={"Authorization": f"Bearer {token}"})
    alpha, beta = {"Service-CRN": crns["alpha"]}, {"Service-CRN": "beta"}  # a CRN or a name
    with http:
        created = http.post("/api/v1/jobs", headers=alpha,
                           json={"program_id": "hello-world", "params": {"iterations": 1}})
        assert created.status_code == 200, created.text
        job = created.json()["job"]
        assert job["id"] in [j["id"] for j in http.get("/api/v1/jobs", headers=alpha).json()["jobs"]]
        assert http.get("/api/v1/jobs", headers=beta).json()["jobs"] == []  # each instance its own jobs
        error_of(http.get(f"/api/v1/jobs/{job['id']}", headers=beta), 404, "JOB_NOT_FOUND")
        assert http.get("/api/v1/instance", headers=beta).json()["instance"]["crn"] == crns["beta"]
        error_of(http.post("/api/v1/jobs", headers=beta, json={"program_id": "hello-world"}), 403,
                 "ACTION_NOT_ALLOWED")  # a Reader there
        error_of(http.get("/api/v1/jobs", headers={"Service-CRN": "gamma"}), 403, "NO_ROLE_ON_INSTANCE")
        error_of(http.get("/api/v1/jobs", headers={"Service-CRN": rest.suite.instance}), 404, "INSTANCE_NOT_FOUND")
        error = error_of(http.get("/api/v1/jobs"), 400, "SERVICE_CRN_MISSING")  # an account token names none
        assert error["field_violations"][0]["field"] == "Service-CRN"
        # The admin API is the account's: the same token, Service-CRN or not (a member may not manage it).
        error_of(http.get("/api/v1/admin/access_groups", headers=alpha), 403, "ACCOUNT_ADMIN_REQUIRED")


def test_the_front_door_exchanges_once_per_token_and_instance(rest):
    key, _, crns = member_of_two_instances(rest, "cached")
    tokens = rest.front_door.tokens
    with rest.client(key, crns["alpha"]) as http:
        before = tokens.exchanges
        for _ in range(5):
            assert http.get("/api/v1/programs").status_code == 200
        assert tokens.exchanges - before == 1
        assert http.get("/api/v1/programs", headers={"Service-CRN": "beta"}).status_code == 200
        assert tokens.exchanges - before == 2
    instance_token = httpx.post(f"{rest.url}/identity/token", data={
        "grant_type": IAM_GRANT, "apikey": key, "instance": crns["alpha"]}).json()["access_token"]
    before = tokens.exchanges  # a token of the very instance named needs no exchange
    assert httpx.get(f"{rest.url}/api/v1/programs", headers={
        "Authorization": f"Bearer {instance_token}", "Service-CRN": crns["alpha"]}).status_code == 200
    assert tokens.exchanges == before


def refused_within(http: httpx.Client, seconds: float = 5.0) -> httpx.Response:
    started = time.monotonic()
    while (response := http.get("/api/v1/programs")).status_code == 200:
        assert time.monotonic() - started < seconds, "a revoked sign-in still works after 5 s"
        time.sleep(0.2)
    return response


def test_a_deleted_key_ends_the_sign_in_and_its_cached_instance_tokens_within_5_s(rest):
    key, _, crns = member_of_two_instances(rest, "deleted")
    with rest.client(key, crns["alpha"]) as http:
        assert http.get("/api/v1/programs").status_code == 200  # its instance token is cached now
        rest.suite.auth_store.delete_key(key_id_of(key))
        error_of(refused_within(http), 401, "TOKEN_REVOKED")
        # The refused instance token is forgotten; auth, asked again, refuses the sign-in itself.
        before = rest.front_door.tokens.exchanges
        error_of(http.get("/api/v1/programs"), 401, "TOKEN_REVOKED")
        error_of(http.get("/api/v1/programs", headers={"Service-CRN": "beta"}), 401, "TOKEN_REVOKED")
        assert rest.front_door.tokens.exchanges - before == 2
    error_of(httpx.post(f"{rest.url}/identity/token", data={"grant_type": IAM_GRANT, "apikey": key}), 401,
             "API_KEY_INVALID")


def test_a_disabled_user_and_a_removed_role_end_the_sign_in_within_5_s(rest):
    store = rest.suite.auth_store
    key, user, crns = member_of_two_instances(rest, "disabled")
    with rest.client(key, "alpha") as http:
        assert http.get("/api/v1/programs").status_code == 200
        store.set_user_disabled(user, True)
        error_of(refused_within(http), 401, "TOKEN_REVOKED")
        error_of(http.get("/api/v1/programs", headers={"Service-CRN": "beta"}), 401, "TOKEN_REVOKED")

    key, user, crns = member_of_two_instances(rest, "demoted")
    with rest.client(key, "beta") as http:
        assert http.get("/api/v1/programs").status_code == 200
        account = store.find_instance([m["account_id"] for m in store.memberships_of(user)], "beta")["account_id"]
        policy = next(p for p in store.account_policies(account) if p["subject_id"] == user and p["role"] == "reader")
        store.delete_policy(policy)
        error_of(refused_within(http), 401, "TOKEN_REVOKED")
    time.sleep(0.01)
    with rest.client(key, "beta") as http:  # signed in again: the role is gone, the other one stays
        error_of(http.get("/api/v1/programs"), 403, "NO_ROLE_ON_INSTANCE")
        assert http.get("/api/v1/programs", headers={"Service-CRN": "alpha"}).status_code == 200


def test_a_user_of_two_accounts_names_one_at_sign_in_and_reaches_both_accounts_instances(rest):
    store = rest.suite.auth_store
    key, user, crns = member_of_two_instances(rest, "first-account")
    other = store.create_account("account-second", store.create_user("owner-second@example.org"))
    store.invite(other, user)
    store.answer_invitation(other, user, True)
    elsewhere = store.create_instance(other, "delta", "lite")
    store.create_policy(other, "user", user, elsewhere["id"], "reader")
    token_url = f"{rest.url}/identity/token"
    error = error_of(httpx.post(token_url, data={"grant_type": IAM_GRANT, "apikey": key}), 400, "ACCOUNT_AMBIGUOUS")
    assert "account" in error["message"]
    response = httpx.post(token_url, data={"grant_type": IAM_GRANT, "apikey": key, "account": other})
    assert response.status_code == 200, response.text
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    for instance, crn in (("delta", elsewhere["crn"]), (crns["alpha"], crns["alpha"])):
        got = httpx.get(f"{rest.url}/api/v1/instance", headers={**headers, "Service-CRN": instance})
        assert got.status_code == 200 and got.json()["instance"]["crn"] == crn, got.text
