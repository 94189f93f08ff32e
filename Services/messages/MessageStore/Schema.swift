import GRDB

/// The store's migrations. Never edit one that has shipped: add another.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: users, conversations, messages, read markers, audit, search") { db in
            try db.execute(sql: """
                CREATE TABLE users (
                    email TEXT PRIMARY KEY NOT NULL,            -- lowercased
                    name TEXT NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('admin', 'doctor')),
                    password_hash TEXT NOT NULL,                -- bcrypt
                    disabled INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL                 -- ms since 1970
                );

                CREATE TABLE conversations (
                    id TEXT PRIMARY KEY NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
                    title TEXT,
                    direct_key TEXT UNIQUE,                     -- 'a@x b@y' (sorted) for 1:1, so a pair has one conversation
                    created_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    last_seq INTEGER NOT NULL DEFAULT 0,        -- the newest message's seq; seqs are gap-free
                    last_message_at INTEGER
                );

                CREATE TABLE participants (
                    conversation_id TEXT NOT NULL REFERENCES conversations(id),
                    email TEXT NOT NULL REFERENCES users(email),
                    read_seq INTEGER NOT NULL DEFAULT 0,        -- read up to this seq
                    read_at INTEGER,
                    joined_at INTEGER NOT NULL,
                    PRIMARY KEY (conversation_id, email)
                ) WITHOUT ROWID;
                CREATE INDEX participants_by_email ON participants(email, conversation_id);

                CREATE TABLE messages (
                    rowid INTEGER PRIMARY KEY,                  -- the search index's key
                    id TEXT NOT NULL UNIQUE,
                    conversation_id TEXT NOT NULL REFERENCES conversations(id),
                    seq INTEGER NOT NULL,
                    sender_email TEXT NOT NULL,
                    content TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    read_at INTEGER,                            -- first time a recipient's marker covered it
                    client_id TEXT,
                    UNIQUE (conversation_id, seq),
                    UNIQUE (sender_email, client_id)            -- a retried send is stored once
                );
                CREATE INDEX messages_by_expiry ON messages(expires_at);

                CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');
                CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
                    INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content);
                END;
                CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
                    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
                END;

                CREATE TABLE audit_log (
                    id INTEGER PRIMARY KEY,
                    at INTEGER NOT NULL,
                    actor TEXT,                                 -- who (an email), or NULL for the system
                    action TEXT NOT NULL,                       -- login, login_failed, send, history, search, mark_read, admin.*
                    target TEXT,                                -- a conversation, message or user
                    outcome TEXT NOT NULL,                      -- ok, denied, not_found, invalid
                    gateway TEXT,
                    request_id TEXT,
                    detail TEXT
                );
                CREATE INDEX audit_log_by_time ON audit_log(at);
                -- Stream entries already applied, so a redelivered entry (crash before XACK) is applied once.
                CREATE TABLE applied_commands (
                    entry_id TEXT PRIMARY KEY NOT NULL,
                    applied_at INTEGER NOT NULL,
                    message_id TEXT                             -- for sends: the message it stored
                ) WITHOUT ROWID;

                CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE ON audit_log BEGIN
                    SELECT RAISE(ABORT, 'the audit log is append-only');
                END;
                """)
        }
        migrator.registerMigration("v2: legal hold") { db in
            try db.execute(sql: "ALTER TABLE conversations ADD COLUMN legal_hold INTEGER NOT NULL DEFAULT 0")
        }
        // The store indexes a transaction's new messages in one statement at its end
        // (`MessageStore.indexMessages`). With the trigger, FTS5 wrote its pending terms out as a
        // new segment at every savepoint, that is at every send of a batch: 48 KiB written per send.
        migrator.registerMigration("v3: search index filled per transaction") { db in
            try db.execute(sql: "DROP TRIGGER messages_fts_insert")
        }
        // What each step of a large purge deleted, until the purge's own transaction adds it up
        // (`MessageStore.purgeStep`): a service killed between the steps is given the command
        // again, and its answer, announcement and audit line still count every step.
        migrator.registerMigration("v4: purge steps") { db in
            try db.execute(sql: """
                CREATE TABLE purge_steps (
                    step INTEGER PRIMARY KEY,
                    entry_id TEXT NOT NULL,                     -- the purge command's stream entry
                    recorded_at INTEGER NOT NULL,
                    deleted TEXT NOT NULL,                      -- JSON {conversation id: [message ids]}
                    held TEXT NOT NULL                          -- JSON [message ids] kept for a legal hold
                );
                CREATE INDEX purge_steps_by_entry ON purge_steps(entry_id);
                """)
        }
        // The per-sender uniqueness of `client_id` is kept, with the columns swapped: an index
        // that starts with the sender put each send of a batch on that sender's own page, and
        // a random client id on a random page (half the WAL written per send, BENCHMARKS.md,
        // eighth round). Starting with the client id, time-ordered ids (`TimeOrderedID`, what
        // the gateway, the web client and the load tool send) all land at the index's end.
        // SQLite cannot change a table's constraint in place, so the table is rebuilt with the
        // same rows and rowids (the search index's keys).
        migrator.registerMigration("v5: client ids unique per sender, client id first") { db in
            try db.execute(sql: """
                CREATE TABLE messages_v5 (
                    rowid INTEGER PRIMARY KEY,                  -- the search index's key
                    id TEXT NOT NULL UNIQUE,
                    conversation_id TEXT NOT NULL REFERENCES conversations(id),
                    seq INTEGER NOT NULL,
                    sender_email TEXT NOT NULL,
                    content TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    read_at INTEGER,                            -- first time a recipient's marker covered it
                    client_id TEXT,
                    UNIQUE (conversation_id, seq),
                    UNIQUE (client_id, sender_email)            -- a retried send is stored once
                );
                INSERT INTO messages_v5 (rowid, id, conversation_id, seq, sender_email, content, created_at, expires_at, read_at, client_id)
                    SELECT rowid, id, conversation_id, seq, sender_email, content, created_at, expires_at, read_at, client_id FROM messages ORDER BY rowid;
                DROP TABLE messages;
                ALTER TABLE messages_v5 RENAME TO messages;
                CREATE INDEX messages_by_expiry ON messages(expires_at);
                CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
                    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
                END;
                """)
        }
        // An entry read again after its batch committed (the service killed before XACK) is
        // answered and announced as it was the first time (`MessageStore.apply`): a refused
        // command with its error, a created conversation with itself, so these are kept.
        migrator.registerMigration("v6: applied entries keep their error or created conversation") { db in
            try db.execute(sql: """
                ALTER TABLE applied_commands ADD COLUMN conversation_id TEXT;   -- for create_conversation: the one it made
                ALTER TABLE applied_commands ADD COLUMN error TEXT;             -- for a refused command: its ChatError as JSON
                """)
        }
        // A purge read again after a crash is announced again too (its `messages_purged`
        // events, which clients drop the messages from view by): what it deleted is kept, as
        // its `PurgeResult` in JSON. (No SQL comment after the column: SQLite would keep it in
        // the table's definition, before its closing parenthesis.)
        migrator.registerMigration("v7: applied purges keep what they deleted") { db in
            try db.execute(sql: "ALTER TABLE applied_commands ADD COLUMN purged TEXT")
        }
        // Each move of a read marker gets the next version (the highest so far plus one, in
        // the marker's own transaction, so in commit order), so a client can ask `sync` for the
        // receipts that changed after the version it has (`receipts_after`) instead of every
        // marker of every conversation. Markers already moved are numbered 1, 2, ... in the
        // order they were read: versions are unique, so a replay's receipts can stop at any.
        migrator.registerMigration("v8: read marker versions") { db in
            try db.execute(sql: """
                ALTER TABLE participants ADD COLUMN read_version INTEGER NOT NULL DEFAULT 0;
                UPDATE participants SET read_version = numbered.n FROM (
                    SELECT conversation_id, email, ROW_NUMBER() OVER (ORDER BY read_at, conversation_id, email) AS n FROM participants WHERE read_seq > 0
                ) AS numbered WHERE participants.conversation_id = numbered.conversation_id AND participants.email = numbered.email;
                CREATE INDEX participants_by_read_version ON participants(read_version);
                """)
        }
        // `sync` asks for the markers of a user's conversations that moved after a version:
        // by conversation, then version, instead of reading every member's marker of every
        // conversation the user is in (600 rows for a user in three groups of 200, 66 µs of a
        // sync that replays nothing; 11 µs with the index; BENCHMARKS.md, twentieth round).
        // A marker's move now updates one more index.
        migrator.registerMigration("v9: markers by conversation and version") { db in
            try db.execute(sql: "CREATE INDEX participants_by_conversation_version ON participants(conversation_id, read_version)")
        }
        // What gateways refuse besides a disabled user's tokens lives in Redis keys that a
        // Redis losing its data would lose, letting logged-out tokens and those older than a
        // password change in again until they expire. The store keeps them too, until then,
        // and puts them back (`restore_auth`, docs/operations.md). A password an admin or an
        // operator set must be changed by its user before anything else.
        migrator.registerMigration("v10: revoked tokens, session cutoffs, passwords to change") { db in
            try db.execute(sql: """
                ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
                CREATE TABLE revoked_tokens (
                    jti TEXT PRIMARY KEY,
                    email TEXT NOT NULL,
                    expires_at INTEGER NOT NULL                 -- ms; the token's own expiry, after which nothing needs refusing
                ) WITHOUT ROWID;
                CREATE TABLE session_cutoffs (
                    email TEXT PRIMARY KEY,
                    tokens_before INTEGER NOT NULL,             -- ms; the user's tokens issued before it are refused
                    expires_at INTEGER NOT NULL                 -- ms; when the last such token expires
                ) WITHOUT ROWID;
                """)
        }
        return migrator
    }
}
