"""sqlite: store every message, its parsed parts and its attachments in an SQLite database.

[handler.sqlite] settings:

    database = /var/lib/mailserver/mail.sqlite   ; default <spool>/mail.sqlite; relative
                                                 ; paths are relative to the config file
    timeout  = 30                                ; seconds to wait while the database is busy

Schema (created on first use; WAL journal, so readers never block the server):

    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY,
        queue_id    TEXT NOT NULL UNIQUE,   -- the spool's id: a retried delivery is stored once
        stored_at   TEXT NOT NULL,          -- UTC, ISO 8601
        sender      TEXT NOT NULL,          -- envelope sender, '' for <>
        recipients  TEXT NOT NULL,          -- JSON list of the envelope recipients
        remote_addr TEXT NOT NULL,
        helo        TEXT NOT NULL,
        subject     TEXT NOT NULL,
        from_addr   TEXT NOT NULL,          -- JSON list of "Name <addr>" (header From)
        to_addr     TEXT NOT NULL,          -- JSON list (header To)
        cc_addr     TEXT NOT NULL,          -- JSON list (header Cc)
        message_id  TEXT NOT NULL,          -- header Message-ID
        text_body   TEXT,                   -- the text/plain body, if any
        html_body   TEXT,                   -- the text/html body, if any
        auth        TEXT,                   -- JSON of the SPF/DKIM/DMARC/ARC results, or NULL
        raw         BLOB NOT NULL           -- the message as received (CRLF, our headers on top)
    );
    CREATE TABLE attachments (
        id           INTEGER PRIMARY KEY,
        message      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        filename     TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size         INTEGER NOT NULL,
        data         BLOB NOT NULL
    );
    CREATE INDEX attachments_message ON attachments(message);
    CREATE INDEX messages_sender ON messages(sender);

A busy or locked database is a temporary failure (the message is retried).
Copy this file into handlers/ to use it.
"""

import os

from mailserver import TempFail

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY,
    queue_id    TEXT NOT NULL UNIQUE,
    stored_at   TEXT NOT NULL,
    sender      TEXT NOT NULL,
    recipients  TEXT NOT NULL,
    remote_addr TEXT NOT NULL,
    helo        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    from_addr   TEXT NOT NULL,
    to_addr     TEXT NOT NULL,
    cc_addr     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    text_body   TEXT,
    html_body   TEXT,
    auth        TEXT,
    raw         BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS attachments (
    id           INTEGER PRIMARY KEY,
    message      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    data         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS attachments_message ON attachments(message);
CREATE INDEX IF NOT EXISTS messages_sender ON messages(sender);
"""


def handle(envelope):
    import sqlite3  # imported here: every connection loads the handlers, few call this one

    path = database_path(envelope)
    try:
        store(path, envelope, float(envelope.config.get("timeout", "30") or 30))
    except sqlite3.OperationalError as e:  # locked, busy, disk full, unwritable
        raise TempFail(f"{path}: {e}")


def database_path(envelope) -> str:
    path = envelope.config.get("database", "").strip() or os.path.join(envelope.spool, "mail.sqlite")
    if not os.path.isabs(path) and envelope.server_config is not None:
        path = os.path.join(os.path.dirname(envelope.server_config.path), path)
    return os.path.normpath(path)


def connect(path: str, timeout: float = 30.0):
    import sqlite3

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    db = sqlite3.connect(path, timeout=timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(SCHEMA)
    return db


def store(path: str, envelope, timeout: float = 30.0) -> int:
    """Insert the message (once per queue id); its row id."""
    import datetime
    import json

    db = connect(path, timeout)
    try:
        with db:
            found = db.execute("SELECT id FROM messages WHERE queue_id = ?", (envelope.queue_id,)).fetchone()
            if found:
                return int(found[0])
            auth = envelope.auth.to_dict() if envelope.auth is not None else None
            cursor = db.execute(
                "INSERT INTO messages (queue_id, stored_at, sender, recipients, remote_addr, helo, subject,"
                " from_addr, to_addr, cc_addr, message_id, text_body, html_body, auth, raw)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    envelope.queue_id,
                    datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    envelope.sender,
                    json.dumps(envelope.recipients),
                    envelope.remote_addr,
                    envelope.helo,
                    envelope.subject,
                    json.dumps([str(a) for a in envelope.from_]),
                    json.dumps([str(a) for a in envelope.to]),
                    json.dumps([str(a) for a in envelope.cc]),
                    envelope.message_id,
                    envelope.text,
                    envelope.html,
                    json.dumps(auth) if auth is not None else None,
                    envelope.raw,
                ),
            )
            row = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO attachments (message, filename, content_type, size, data)"
                " VALUES (?, ?, ?, ?, ?)",
                [(row, a.filename, a.content_type, a.size, a.data) for a in envelope.attachments],
            )
            return row
    finally:
        db.close()
