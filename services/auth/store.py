"""The auth service's own tables: accounts, users, instances, role bindings, API keys, signing keys.

API keys are random 32-byte secrets, so a SHA-256 of the secret is enough to store (no slow
password hash needed); a key is "qrk_<key id>_<secret>" and is found by its id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets

import sqlalchemy as sa

from qruntime_kit.store import create_engine

metadata = sa.MetaData()
_now = lambda: dt.datetime.now(dt.UTC)  # noqa: E731

accounts = sa.Table(
    "auth_account", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, default=_now),
)
users = sa.Table(
    "auth_user", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.ForeignKey("auth_account.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, default=_now),
)
instances = sa.Table(
    "auth_instance", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("crn", sa.String(300), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("account_id", sa.ForeignKey("auth_account.id"), nullable=False),
    sa.Column("plan", sa.String(20), nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, default=_now),
    sa.UniqueConstraint("account_id", "name"),
)
role_bindings = sa.Table(
    "auth_role_binding", metadata,
    sa.Column("instance_id", sa.ForeignKey("auth_instance.id"), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("auth_user.id"), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
)
api_keys = sa.Table(
    "auth_api_key", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # "user" or "service"
    sa.Column("user_id", sa.ForeignKey("auth_user.id"), nullable=True),
    sa.Column("service_name", sa.String(100), nullable=True),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, default=_now),
)
signing_keys = sa.Table(
    "auth_signing_key", metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("private_key_pem", sa.Text, nullable=False),
    sa.Column("public_key_pem", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, default=_now),
)

KEY_PREFIX = "qrk"


def _new_id(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class KeyOwner:
    """Who an API key belongs to."""

    kind: str
    user_id: str | None
    account_id: str | None
    service_name: str | None


class AuthStore:
    """Reads and writes the auth tables; every method is one transaction."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(accounts)) == 0

    # Accounts, users, instances -------------------------------------------------------------
    def create_account(self, name: str) -> str:
        account_id = _new_id()
        with self.engine.begin() as conn:
            conn.execute(accounts.insert().values(id=account_id, name=name))
        return account_id

    def create_user(self, account_id: str, name: str) -> str:
        user_id = "user-" + _new_id()
        with self.engine.begin() as conn:
            conn.execute(users.insert().values(id=user_id, account_id=account_id, name=name))
        return user_id

    def create_instance(self, account_id: str, name: str, plan: str) -> dict:
        instance_id = _new_id()
        crn = f"crn:v1:qruntime:local:quantum-computing:a/{account_id}:{instance_id}::"
        with self.engine.begin() as conn:
            conn.execute(instances.insert().values(
                id=instance_id, crn=crn, name=name, account_id=account_id, plan=plan))
        return self.find_instance(account_id, crn)

    def grant_role(self, instance_crn: str, user_id: str, role: str) -> None:
        with self.engine.begin() as conn:
            instance_id = conn.scalar(sa.select(instances.c.id).where(instances.c.crn == instance_crn))
            conn.execute(role_bindings.delete().where(
                (role_bindings.c.instance_id == instance_id) & (role_bindings.c.user_id == user_id)))
            conn.execute(role_bindings.insert().values(instance_id=instance_id, user_id=user_id, role=role))

    def find_instance(self, account_id: str, crn_or_name: str) -> dict | None:
        """The account's instance with that CRN or name; None otherwise (others' stay invisible)."""
        query = sa.select(instances).where(
            (instances.c.account_id == account_id)
            & ((instances.c.crn == crn_or_name) | (instances.c.name == crn_or_name))
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def role_of(self, user_id: str, instance_id: str) -> str | None:
        query = sa.select(role_bindings.c.role).where(
            (role_bindings.c.user_id == user_id) & (role_bindings.c.instance_id == instance_id))
        with self.engine.connect() as conn:
            return conn.scalar(query)

    # API keys -------------------------------------------------------------------------------
    def create_user_key(self, user_id: str) -> str:
        """A new API key for the user; the secret is returned once and only its hash is kept."""
        return self._create_key(kind="user", user_id=user_id)

    def ensure_service_key(self, api_key: str, service_name: str = "qruntime-services") -> None:
        """Make api_key the one service key of service_name: a rotated key replaces the old one,
        which stops working, and a changed secret under the same key id replaces the old secret."""
        key_id, secret = self._split(api_key) or (None, None)
        if key_id is None:
            raise ValueError("a service key must look like qrk_<id>_<secret>; make one with new_api_key()")
        t = api_keys
        with self.engine.begin() as conn:
            taken = conn.scalar(sa.select(t.c.kind).where(t.c.id == key_id))
            if taken is not None and taken != "service":
                raise ValueError("the service key's id is taken by a user's API key; make a new one")
            conn.execute(t.delete().where((t.c.kind == "service") & (t.c.service_name == service_name)))
            conn.execute(t.insert().values(
                id=key_id, secret_sha256=_sha256(secret), kind="service", service_name=service_name))

    def _create_key(self, **owner) -> str:
        api_key = new_api_key()
        key_id, secret = self._split(api_key)
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(id=key_id, secret_sha256=_sha256(secret), **owner))
        return api_key

    @staticmethod
    def _split(api_key: str) -> tuple[str, str] | None:
        parts = api_key.split("_")
        if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
            return None
        return parts[1], parts[2]

    def owner_of_key(self, api_key: str) -> KeyOwner | None:
        """Who the key belongs to, or None for a malformed, unknown or wrong key."""
        split = self._split(api_key)
        if split is None:
            return None
        key_id, secret = split
        query = (
            sa.select(api_keys, users.c.account_id)
            .select_from(api_keys.outerjoin(users, users.c.id == api_keys.c.user_id))
            .where(api_keys.c.id == key_id)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None or not hmac.compare_digest(row["secret_sha256"], _sha256(secret)):
            return None
        return KeyOwner(row["kind"], row["user_id"], row["account_id"], row["service_name"])

    # Signing keys -----------------------------------------------------------------------------
    def signing_keys(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(signing_keys).order_by(signing_keys.c.create_time.desc())).mappings()
            return [dict(r) for r in rows]

    def add_signing_key(self, private_key_pem: str, public_key_pem: str) -> str:
        key_id = _new_id()
        with self.engine.begin() as conn:
            conn.execute(signing_keys.insert().values(
                key_id=key_id, private_key_pem=private_key_pem, public_key_pem=public_key_pem))
        return key_id


def new_api_key() -> str:
    """A fresh API key: qrk_<id>_<secret>."""
    return f"{KEY_PREFIX}_{_new_id()}_{secrets.token_urlsafe(32).replace('_', '-')}"
