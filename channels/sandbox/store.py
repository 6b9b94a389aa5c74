"""What the stand-ins received, in a small SQLite file any process can read (/sandbox)."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    subject TEXT,
    body TEXT NOT NULL,
    raw BLOB,
    meta TEXT NOT NULL DEFAULT '{}',
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_messages_to ON messages (to_addr);
CREATE TABLE IF NOT EXISTS push_subscriptions (
    id TEXT PRIMARY KEY,
    private_key TEXT NOT NULL,
    auth TEXT NOT NULL,
    vapid_key TEXT,
    gone INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
"""


class SandboxStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    def add(
        self,
        channel: str,
        to: str,
        body: str,
        subject: str | None = None,
        raw: bytes | None = None,
        meta: dict | None = None,
    ) -> int:
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        cursor = self._db().execute(
            "INSERT INTO messages (channel, to_addr, subject, body, raw, meta, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (channel, to, subject, body, raw, json.dumps(meta or {}), now),
        )
        return int(cursor.lastrowid)

    def messages(
        self, limit: int = 200, channel: str | None = None, to: str | None = None
    ) -> list[dict]:
        """Newest first, as /sandbox/messages.json shows them."""
        where, args = [], []
        if channel:
            where.append("channel = ?")
            args.append(channel)
        if to:
            where.append("to_addr = ?")
            args.append(to)
        sql = "SELECT * FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._db().execute(sql, [*args, limit]).fetchall()
        return [_as_dict(row) for row in rows]

    def raw(self, message_id: int) -> bytes | None:
        row = self._db().execute("SELECT raw FROM messages WHERE id = ?", (message_id,)).fetchone()
        return row["raw"] if row else None

    def count(self, channel: str | None = None) -> int:
        if channel:
            sql, args = "SELECT count(*) FROM messages WHERE channel = ?", (channel,)
        else:
            sql, args = "SELECT count(*) FROM messages", ()
        return int(self._db().execute(sql, args).fetchone()[0])

    def clear(self) -> None:
        self._db().execute("DELETE FROM messages")

    # -- the Web Push stand-in's subscriptions (channels.sandbox.push) ------------------------

    def add_push_subscription(
        self, subscription_id: str, private_key: str, auth: str, vapid_key: str | None = None
    ) -> None:
        """A browser's side of a subscription: its P-256 private key (base64url raw), its auth
        secret (base64url) and, if it subscribed with one, the applicationServerKey the push
        service will insist on."""
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        self._db().execute(
            "INSERT INTO push_subscriptions (id, private_key, auth, vapid_key, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (subscription_id, private_key, auth, vapid_key, now),
        )

    def push_subscription(self, subscription_id: str) -> dict | None:
        sql = "SELECT id, private_key, auth, vapid_key, gone FROM push_subscriptions WHERE id = ?"
        row = self._db().execute(sql, (subscription_id,)).fetchone()
        return None if row is None else {**dict(row), "gone": bool(row["gone"])}

    def expire_push_subscription(self, subscription_id: str) -> bool:
        """Mark a subscription gone (the browser unsubscribed); False if there is none."""
        cursor = self._db().execute(
            "UPDATE push_subscriptions SET gone = 1 WHERE id = ?", (subscription_id,)
        )
        return cursor.rowcount > 0


def _as_dict(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "channel": row["channel"],
        "to": row["to_addr"],
        "subject": row["subject"],
        "body": row["body"],
        "meta": json.loads(row["meta"]),
        "received_at": row["received_at"],
    }
