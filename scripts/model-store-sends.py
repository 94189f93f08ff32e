#!/usr/bin/env python3
"""The SQL of `chat-bench store` without Swift: Python's sqlite3 on the same schema (made by
`chat-messages migrate` of the release build), the same pragmas and the same statements per
send, batches of 256 (BATCH=n) in one transaction, synced at commit, 3 rounds of 20,000 sends. What a
single SQLite writer costs per send on this machine, whatever the language around it
(BENCHMARKS.md, tenth round). SKIP=fts,audit,applied,savepoint,sync,expiry leaves parts out:
the search index, the audit row, the applied-entry row, the per-send savepoint, the sync,
the messages' expiry index.
Ids are UUID v7 with random bits within a millisecond (the store's are monotonic there).
Usage: [SKIP=...] [BATCH=n] python3 scripts/model-store-sends.py"""
import sqlite3, time, os, subprocess, uuid, random, statistics, tempfile
SKIP = set(os.environ.get("SKIP", "").split(","))
BATCH = int(os.environ.get("BATCH", "256"))
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
path = os.path.join(tempfile.mkdtemp(prefix="model-store-"), "chat.sqlite")
subprocess.run([os.path.join(root, ".build/release/chat-messages"), "migrate"], env={"CHAT_DB_PATH": path, "PATH": os.environ["PATH"]}, check=True, capture_output=True)
db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
for p in ("journal_mode=WAL", "foreign_keys=ON", "secure_delete=ON", "cache_size=-32768", "wal_autocheckpoint=16384", "synchronous=" + ("OFF" if "sync" in SKIP else "FULL")):
    db.execute("PRAGMA " + p)
if "expiry" in SKIP: db.execute("DROP INDEX messages_by_expiry")
now = int(time.time() * 1000)
pairs = []
for i in range(100):
    a, b = f"store-{i:05d}-a@bench.local", f"store-{i:05d}-b@bench.local"
    for e in (a, b): db.execute("INSERT INTO users (email, name, role, password_hash, disabled, created_at) VALUES (?, ?, 'doctor', 'x', 0, ?)", (e, e, now))
    cid = str(uuid.uuid4())
    db.execute("INSERT INTO conversations (id, kind, direct_key, created_by, created_at) VALUES (?, 'direct', ?, ?, ?)", (cid, a + " " + b, a, now))
    for e in (a, b): db.execute("INSERT INTO participants (conversation_id, email, joined_at) VALUES (?, ?, ?)", (cid, e, now))
    pairs.append((a, cid))
def v7():
    ms = int(time.time() * 1000); r = random.getrandbits(74)
    h = (ms << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & ((1 << 62) - 1))
    s = f"{h:032x}"; return f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}"
counter = 0
rates = []
for rnd in range(3):
    start = time.perf_counter(); sent = 0
    while sent < 20000:
        n = min(BATCH, 20000 - sent)
        db.execute("BEGIN IMMEDIATE")
        last = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()[0]
        t = int(time.time() * 1000)
        for k in range(n):
            counter += 1
            sender, cid = pairs[(sent + k) % 100]
            entry = f"{counter}-0"; client = v7(); content = f"bench note {counter}: the patient in bed 4 is stable"
            db.execute("SELECT message_id FROM applied_commands WHERE entry_id = ?", (entry,)).fetchone()
            if "savepoint" not in SKIP: db.execute("SAVEPOINT s")
            db.execute("SELECT * FROM messages WHERE client_id = ? AND sender_email = ?", (client, sender)).fetchone()
            conv = db.execute("SELECT c.* FROM conversations c JOIN participants p ON p.conversation_id = c.id WHERE c.id = ? AND p.email = ?", (cid, sender)).fetchone()
            db.execute("SELECT email FROM participants WHERE conversation_id = ? ORDER BY email", (cid,)).fetchall()
            seq = conv[6] + 1
            db.execute("UPDATE conversations SET last_seq = ?, last_message_at = ? WHERE id = ?", (seq, t, cid))
            mid = v7()
            db.execute("INSERT INTO messages (id, conversation_id, seq, sender_email, content, created_at, expires_at, read_at, client_id) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                       (mid, cid, seq, sender, content, t, t + 90 * 86400000, client))
            if "savepoint" not in SKIP: db.execute("RELEASE s")
            if "applied" not in SKIP: db.execute("INSERT INTO applied_commands (entry_id, applied_at, message_id) VALUES (?, ?, ?)", (entry, t, mid))
            if "audit" not in SKIP: db.execute("INSERT INTO audit_log (at, actor, action, target, outcome, gateway, request_id, detail) VALUES (?, ?, 'send', ?, 'ok', 'bench', ?, NULL)", (t, sender, cid, f"r{counter}"))
        if "fts" not in SKIP: db.execute("INSERT INTO messages_fts(rowid, content) SELECT rowid, content FROM messages WHERE rowid > ?", (last,))
        db.execute("COMMIT")
        sent += n
    secs = time.perf_counter() - start
    rates.append(20000 / secs)
    print(f"round {rnd+1}: {20000/secs:.0f} sends/s, {secs*1e6/20000:.1f} µs per send")
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
print(f"skipped {sorted(SKIP - {''}) or 'nothing'}: median {statistics.median(rates):.0f} sends/s, {1e6 / statistics.median(rates):.1f} µs per send")
for suffix in ("", "-wal", "-shm"):
    try: os.remove(path + suffix)
    except FileNotFoundError: pass
os.rmdir(os.path.dirname(path))
