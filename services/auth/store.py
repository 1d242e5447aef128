"""The auth service's own tables: accounts, users and their memberships, instances, access groups,
policies, API keys, signing keys and revocations.

Users exist on their own and join accounts by invitation (a membership, `invited` until accepted).
Roles on instances come from policies: on one instance or on all of an account's instances, for a
user or for an access group; a user's roles on an instance are the union of every policy that
reaches them. API keys are kept only as keyed hashes (keys.py).

The schema is brought up to date at start by the revisions in qruntime_auth.migrations.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
import uuid

import sqlalchemy as sa

from qruntime_kit import migrations
from qruntime_kit.store import create_engine

from . import keys

# The tables below are what the revisions in qruntime_auth.migrations build; change both together.
MIGRATIONS, VERSION_TABLE = "qruntime_auth.migrations", "auth_alembic_version"
metadata = sa.MetaData()
_now = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
_time = lambda name, **kw: sa.Column(name, sa.DateTime(timezone=True), **kw)  # noqa: E731

accounts = sa.Table(
    "auth_account", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    _time("create_time", nullable=False, default=_now),
)
users = sa.Table(
    "auth_user", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("operator", sa.Boolean, nullable=False, default=False),
    # For a service ID (automation, not a person): the account that owns it and manages its keys.
    sa.Column("service_id_account_id", sa.String(64), nullable=True),
    _time("create_time", nullable=False, default=_now),
)
memberships = sa.Table(
    "auth_membership", metadata,
    sa.Column("account_id", sa.ForeignKey("auth_account.id"), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("auth_user.id"), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),  # owner, administrator, member
    sa.Column("state", sa.String(20), nullable=False),  # invited, active
    _time("create_time", nullable=False, default=_now),
)
instances = sa.Table(
    "auth_instance", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("crn", sa.String(300), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("account_id", sa.ForeignKey("auth_account.id"), nullable=False),
    sa.Column("plan", sa.String(20), nullable=False),
    _time("create_time", nullable=False, default=_now),
    sa.UniqueConstraint("account_id", "name"),
)
groups = sa.Table(
    "auth_access_group", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.ForeignKey("auth_account.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    _time("create_time", nullable=False, default=_now),
    sa.UniqueConstraint("account_id", "name"),
)
group_members = sa.Table(
    "auth_access_group_member", metadata,
    sa.Column("group_id", sa.ForeignKey("auth_access_group.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("auth_user.id"), primary_key=True),
)
policies = sa.Table(
    "auth_policy", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.ForeignKey("auth_account.id"), nullable=False),
    sa.Column("subject_kind", sa.String(20), nullable=False),  # user, group
    sa.Column("subject_id", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.ForeignKey("auth_instance.id"), nullable=True),  # NULL: all the account's
    sa.Column("role", sa.String(20), nullable=False),
    _time("create_time", nullable=False, default=_now),
)
api_keys = sa.Table(
    "auth_api_key", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # "user" or "service" (one of the suite's own)
    sa.Column("user_id", sa.ForeignKey("auth_user.id"), nullable=True),
    sa.Column("service_name", sa.String(100), nullable=True, unique=True),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    _time("create_time", nullable=False, default=_now),
)
signing_keys = sa.Table(
    "auth_signing_key", metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("private_key_pem", sa.Text, nullable=False),
    sa.Column("public_key_pem", sa.Text, nullable=False),
    _time("create_time", nullable=False, default=_now),
)
# Tokens issued before revoke_time to the subject (a user id or an API key id) no longer count.
revocations = sa.Table(
    "auth_revocation", metadata,
    sa.Column("subject", sa.String(64), primary_key=True),
    sa.Column("revoke_time", sa.Float, nullable=False),  # Unix seconds
)
# Append-only: the store has no method that changes or deletes an event.
audit_events = sa.Table(
    "auth_audit_event", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False),  # Unix seconds
    sa.Column("account_id", sa.String(64), nullable=False, index=True),
    sa.Column("subject", sa.String(100), nullable=False),
    sa.Column("instance", sa.String(300), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("method", sa.String(200), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("code", sa.String(40), nullable=False),
    sa.Column("reason", sa.String(100), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
)


def new_id() -> str:
    return secrets.token_hex(8)


def instance_crn(account_id: str, guid: str, *, cloud: str = "qruntime", region: str = "local") -> str:
    """The original's CRN form: crn:v1:<cloud>:public:quantum-computing:<region>:a/<account>:<guid>::"""
    return f"crn:v1:{cloud}:public:quantum-computing:{region}:a/{account_id}:{guid}::"


@dataclasses.dataclass(frozen=True)
class KeyOwner:
    """Who an API key belongs to."""

    key_id: str
    kind: str
    user_id: str | None
    service_name: str | None


class AuthStore:
    """Reads and writes the auth tables; every method is one transaction."""

    def __init__(self, url: str, hash_secret: bytes) -> None:
        self.engine = create_engine(url)
        self._hash_secret = hash_secret
        migrations.upgrade(self.engine, MIGRATIONS, version_table=VERSION_TABLE)

    def close(self) -> None:
        self.engine.dispose()

    def is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(accounts)) == 0

    def _rows(self, query) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def _row(self, query) -> dict | None:
        rows = self._rows(query.limit(1))
        return rows[0] if rows else None

    # Accounts, users, memberships ----------------------------------------------------------
    def create_account(self, name: str, owner_id: str) -> str:
        account_id = new_id()
        with self.engine.begin() as conn:
            conn.execute(accounts.insert().values(id=account_id, name=name))
            conn.execute(memberships.insert().values(account_id=account_id, user_id=owner_id, role="owner",
                                                     state="active"))
        return account_id

    def account(self, account_id: str) -> dict | None:
        return self._row(sa.select(accounts).where(accounts.c.id == account_id))

    def create_user(self, email: str, name: str = "", *, operator: bool = False) -> str:
        user_id = "user-" + new_id()
        with self.engine.begin() as conn:
            conn.execute(users.insert().values(id=user_id, email=email, name=name or email, operator=operator))
        return user_id

    def create_service_id(self, account_id: str, name: str) -> str:
        """A service ID of the account: a member (active at once) whose keys its administrators manage."""
        user_id = "serviceid-" + new_id()
        with self.engine.begin() as conn:
            conn.execute(users.insert().values(id=user_id, email=f"{name}@service-id.{account_id}", name=name,
                                               service_id_account_id=account_id))
            conn.execute(memberships.insert().values(account_id=account_id, user_id=user_id, role="member",
                                                     state="active"))
        return user_id

    def user(self, user_id_or_email: str) -> dict | None:
        return self._row(sa.select(users).where(
            (users.c.id == user_id_or_email) | (users.c.email == user_id_or_email)))

    def set_user_disabled(self, user_id: str, disabled: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id).values(disabled=disabled))
        if disabled:
            self.revoke(user_id)

    def membership(self, account_id: str, user_id: str) -> dict | None:
        return self._row(sa.select(memberships).where(
            (memberships.c.account_id == account_id) & (memberships.c.user_id == user_id)))

    def memberships_of(self, user_id: str) -> list[dict]:
        return self._rows(sa.select(memberships, accounts.c.name.label("account_name"))
                          .join(accounts, accounts.c.id == memberships.c.account_id)
                          .where(memberships.c.user_id == user_id).order_by(memberships.c.create_time))

    def account_members(self, account_id: str) -> list[dict]:
        return self._rows(sa.select(users, memberships.c.role, memberships.c.state)
                          .join(memberships, memberships.c.user_id == users.c.id)
                          .where(memberships.c.account_id == account_id).order_by(users.c.email))

    def invite(self, account_id: str, user_id: str, role: str = "member") -> None:
        with self.engine.begin() as conn:
            conn.execute(memberships.insert().values(account_id=account_id, user_id=user_id, role=role,
                                                     state="invited"))

    def answer_invitation(self, account_id: str, user_id: str, accept: bool) -> bool:
        """Accept (membership becomes active) or decline (it goes); False if there was none."""
        where = ((memberships.c.account_id == account_id) & (memberships.c.user_id == user_id)
                 & (memberships.c.state == "invited"))
        with self.engine.begin() as conn:
            if accept:
                done = conn.execute(memberships.update().where(where).values(state="active")).rowcount
            else:
                done = conn.execute(memberships.delete().where(where)).rowcount
        return bool(done)

    def remove_member(self, account_id: str, user_id: str) -> bool:
        with self.engine.begin() as conn:
            conn.execute(policies.delete().where((policies.c.account_id == account_id)
                                                 & (policies.c.subject_kind == "user")
                                                 & (policies.c.subject_id == user_id)))
            account_groups = sa.select(groups.c.id).where(groups.c.account_id == account_id)
            conn.execute(group_members.delete().where((group_members.c.user_id == user_id)
                                                      & group_members.c.group_id.in_(account_groups)))
            done = conn.execute(memberships.delete().where((memberships.c.account_id == account_id)
                                                           & (memberships.c.user_id == user_id))).rowcount
            # A service ID lives only in its account: out of it, its keys go and it is disabled.
            owned = (users.c.id == user_id) & (users.c.service_id_account_id == account_id)
            if conn.execute(users.update().where(owned).values(disabled=True)).rowcount:
                conn.execute(api_keys.delete().where(api_keys.c.user_id == user_id))
        self.revoke(user_id)
        return bool(done)

    # Instances --------------------------------------------------------------------------------
    def create_instance(self, account_id: str, name: str, plan: str) -> dict:
        guid = str(uuid.uuid4())
        crn = instance_crn(account_id, guid)
        with self.engine.begin() as conn:
            conn.execute(instances.insert().values(id=guid, crn=crn, name=name, account_id=account_id, plan=plan))
        return self.find_instance([account_id], crn)

    def find_instance(self, account_ids: list[str], crn_or_name: str) -> dict | None:
        """The instance of one of the accounts with that CRN or name; None otherwise (others' stay
        invisible). A name held in several of the accounts finds none: give the CRN."""
        rows = self._rows(sa.select(instances).where(
            instances.c.account_id.in_(account_ids)
            & ((instances.c.crn == crn_or_name) | (instances.c.name == crn_or_name))).limit(2))
        return rows[0] if len(rows) == 1 else None

    def account_instances(self, account_id: str) -> list[dict]:
        return self._rows(sa.select(instances).where(instances.c.account_id == account_id)
                          .order_by(instances.c.create_time, instances.c.name))

    def delete_instance(self, instance_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(policies.delete().where(policies.c.instance_id == instance_id))
            conn.execute(instances.delete().where(instances.c.id == instance_id))

    # Access groups and policies -----------------------------------------------------------------
    def create_group(self, account_id: str, name: str) -> dict:
        group_id = "group-" + new_id()
        with self.engine.begin() as conn:
            conn.execute(groups.insert().values(id=group_id, account_id=account_id, name=name))
        return self.group(account_id, group_id)

    def group(self, account_id: str, id_or_name: str) -> dict | None:
        return self._row(sa.select(groups).where(
            (groups.c.account_id == account_id) & ((groups.c.id == id_or_name) | (groups.c.name == id_or_name))))

    def account_groups(self, account_id: str) -> list[dict]:
        return self._rows(sa.select(groups).where(groups.c.account_id == account_id).order_by(groups.c.name))

    def group_member_ids(self, group_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(sa.select(group_members.c.user_id).where(group_members.c.group_id == group_id)
                                     .order_by(group_members.c.user_id)))

    def add_group_member(self, group_id: str, user_id: str) -> None:
        with self.engine.begin() as conn:
            present = conn.scalar(sa.select(sa.func.count()).select_from(group_members).where(
                (group_members.c.group_id == group_id) & (group_members.c.user_id == user_id)))
            if not present:
                conn.execute(group_members.insert().values(group_id=group_id, user_id=user_id))

    def remove_group_member(self, group_id: str, user_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(group_members.delete().where(
                (group_members.c.group_id == group_id) & (group_members.c.user_id == user_id)))
        self.revoke(user_id)

    def delete_group(self, group_id: str) -> None:
        members = self.group_member_ids(group_id)
        with self.engine.begin() as conn:
            conn.execute(policies.delete().where((policies.c.subject_kind == "group")
                                                 & (policies.c.subject_id == group_id)))
            conn.execute(group_members.delete().where(group_members.c.group_id == group_id))
            conn.execute(groups.delete().where(groups.c.id == group_id))
        for user_id in members:
            self.revoke(user_id)

    def create_policy(self, account_id: str, subject_kind: str, subject_id: str, instance_id: str | None,
                      role: str) -> dict:
        policy_id = "policy-" + new_id()
        with self.engine.begin() as conn:
            conn.execute(policies.insert().values(id=policy_id, account_id=account_id, subject_kind=subject_kind,
                                                  subject_id=subject_id, instance_id=instance_id, role=role))
        return self.policy(account_id, policy_id)

    def policy(self, account_id: str, policy_id: str) -> dict | None:
        return self._row(sa.select(policies).where((policies.c.account_id == account_id)
                                                   & (policies.c.id == policy_id)))

    def account_policies(self, account_id: str) -> list[dict]:
        return self._rows(sa.select(policies).where(policies.c.account_id == account_id)
                          .order_by(policies.c.create_time, policies.c.id))

    def delete_policy(self, policy: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(policies.delete().where(policies.c.id == policy["id"]))
        users_reached = ([policy["subject_id"]] if policy["subject_kind"] == "user"
                         else self.group_member_ids(policy["subject_id"]))
        for user_id in users_reached:
            self.revoke(user_id)

    def roles_of(self, user_id: str, instance: dict) -> frozenset[str]:
        """The user's roles on the instance: every policy on it (or on all its account's instances)
        for the user or a group the user is in. None unless the user is an active member."""
        in_groups = sa.select(group_members.c.group_id).where(group_members.c.user_id == user_id)
        query = sa.select(policies.c.role).where(
            (policies.c.account_id == instance["account_id"])
            & ((policies.c.instance_id == instance["id"]) | policies.c.instance_id.is_(None))
            & (((policies.c.subject_kind == "user") & (policies.c.subject_id == user_id))
               | ((policies.c.subject_kind == "group") & policies.c.subject_id.in_(in_groups))))
        membership = self.membership(instance["account_id"], user_id)
        if membership is None or membership["state"] != "active":
            return frozenset()
        with self.engine.connect() as conn:
            return frozenset(conn.scalars(query))

    # API keys -------------------------------------------------------------------------------
    def create_user_key(self, user_id: str, name: str = "") -> tuple[str, dict]:
        """A new API key for the user: (the key, shown this once, and its row without the secret)."""
        api_key = keys.new_api_key()
        key_id, secret = keys.split_api_key(api_key)
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(id=key_id, secret_hash=keys.keyed_hash(self._hash_secret, secret),
                                                  kind="user", user_id=user_id, name=name))
        return api_key, self.api_key(key_id)

    def api_key(self, key_id: str) -> dict | None:
        return self._row(sa.select(*[c for c in api_keys.c if c.name != "secret_hash"]).where(api_keys.c.id == key_id))

    def user_keys(self, user_id: str) -> list[dict]:
        return self._rows(sa.select(*[c for c in api_keys.c if c.name != "secret_hash"])
                          .where(api_keys.c.user_id == user_id).order_by(api_keys.c.create_time))

    def set_key_disabled(self, key_id: str, disabled: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(disabled=disabled))
        if disabled:
            self.revoke(key_id)

    def delete_key(self, key_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.delete().where(api_keys.c.id == key_id))
        self.revoke(key_id)

    def ensure_service_key(self, service_name: str, api_key: str) -> None:
        """Make api_key the one key of the suite's service service_name: a rotated key replaces the
        old one, which stops working at once."""
        split = keys.split_api_key(api_key)
        if split is None:
            raise ValueError(f"the {service_name} service key is not an API key; make one with `qruntime service-key`")
        key_id, secret = split
        t = api_keys
        with self.engine.begin() as conn:
            taken = conn.scalar(sa.select(t.c.kind).where(t.c.id == key_id))
            if taken is not None and taken != "service":
                raise ValueError("the service key's id is taken by a user's API key; make a new one")
            old = list(conn.scalars(sa.select(t.c.id).where(t.c.service_name == service_name)))
            conn.execute(t.delete().where((t.c.service_name == service_name) | (t.c.id == key_id)))
            conn.execute(t.insert().values(id=key_id, secret_hash=keys.keyed_hash(self._hash_secret, secret),
                                           kind="service", service_name=service_name))
        for stale in set(old) - {key_id}:
            self.revoke(stale)

    def owner_of_key(self, api_key: str) -> KeyOwner | None:
        """Who the key belongs to, or None for a malformed, unknown, wrong or disabled key."""
        split = keys.split_api_key(api_key)
        if split is None:
            return None
        key_id, secret = split
        row = self._row(sa.select(api_keys).where(api_keys.c.id == key_id))
        if row is None or not keys.matches(self._hash_secret, secret, row["secret_hash"]) or row["disabled"]:
            return None
        return KeyOwner(key_id, row["kind"], row["user_id"], row["service_name"])

    # Revocation -------------------------------------------------------------------------------
    def revoke(self, subject: str) -> None:
        """Tokens of subject (a user id or an API key id) issued until now stop counting."""
        with self.engine.begin() as conn:
            conn.execute(revocations.delete().where(revocations.c.subject == subject))
            conn.execute(revocations.insert().values(subject=subject, revoke_time=time.time()))

    def revocations_since(self, since: float) -> list[dict]:
        """Revocations made at or after since (Unix seconds)."""
        return self._rows(sa.select(revocations).where(revocations.c.revoke_time >= since))

    # Audit trail ------------------------------------------------------------------------------
    def append_audit_events(self, events: list[dict]) -> None:
        if events:
            with self.engine.begin() as conn:
                conn.execute(audit_events.insert(), events)

    def audit_events(self, account_id: str, *, where: dict, before_id: int | None, limit: int) -> list[dict]:
        """The account's events, newest first, matching where (column -> value; "action" may end in
        "*" for a prefix, "since" is Unix seconds)."""
        t = audit_events
        query = sa.select(t).where(t.c.account_id == account_id)
        for column, value in where.items():
            if column == "since":
                query = query.where(t.c.time >= value)
            elif column == "action" and value.endswith("*"):
                query = query.where(t.c.action.startswith(value[:-1], autoescape=True))
            else:
                query = query.where(t.c[column] == value)
        if before_id is not None:
            query = query.where(t.c.id < before_id)
        return self._rows(query.order_by(t.c.id.desc()).limit(limit))

    # Signing keys -----------------------------------------------------------------------------
    def signing_keys(self) -> list[dict]:
        return self._rows(sa.select(signing_keys).order_by(signing_keys.c.create_time.desc()))

    def add_signing_key(self, private_key_pem: str, public_key_pem: str) -> str:
        key_id = new_id()
        with self.engine.begin() as conn:
            conn.execute(signing_keys.insert().values(
                key_id=key_id, private_key_pem=private_key_pem, public_key_pem=public_key_pem))
        return key_id

    def retire_signing_keys(self, older_than: dt.datetime) -> None:
        """Forget signing keys created before older_than, except the newest."""
        newest = self.signing_keys()[:1]
        with self.engine.begin() as conn:
            conn.execute(signing_keys.delete().where(
                (signing_keys.c.create_time < older_than)
                & signing_keys.c.key_id.notin_([k["key_id"] for k in newest])))
