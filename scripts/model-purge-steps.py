#!/usr/bin/env python3
"""A retention purge's steps without Swift: Python's sqlite3 on the store's schema (made by
`chat-messages migrate` of the release build) with its pragmas, 20,000 messages in one
conversation, then deleted 10 at a time in expiry order, one transaction each (as
`MessageStore.purgeStep` does, without a sync), 1,000 steps. Prints the WAL written per step
and the step's time, and which b-trees one step's WAL frames belong to (BENCHMARKS.md,
thirteenth round). SKIP=fts,secure leaves out the search index's delete trigger and
`secure_delete`; AUTOMERGE=n sets FTS5's automerge. Client ids are time-ordered, as the
web client's.
Usage: [SKIP=...] [AUTOMERGE=n] python3 scripts/model-purge-steps.py"""
import sqlite3, os, subprocess, tempfile, time, uuid, statistics, struct, collections
SKIP = set(os.environ.get("SKIP", "").split(","))
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
path = os.path.join(tempfile.mkdtemp(prefix="model-purge-"), "chat.sqlite")
subprocess.run([os.path.join(root, ".build/release/chat-messages"), "migrate"], env={"CHAT_DB_PATH": path, "PATH": os.environ["PATH"]}, check=True, capture_output=True)
db = sqlite3.connect(path, isolation_level=None)
for p in ("journal_mode=WAL", "foreign_keys=ON", "secure_delete=" + ("OFF" if "secure" in SKIP else "ON"), "cache_size=-32768", "wal_autocheckpoint=0", "synchronous=NORMAL"):
    db.execute("PRAGMA " + p)
if "fts" in SKIP: db.execute("DROP TRIGGER messages_fts_delete")
if "AUTOMERGE" in os.environ: db.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES('automerge', ?)", (int(os.environ["AUTOMERGE"]),))
now = int(time.time() * 1000)
for e in ("a@c", "b@c"): db.execute("INSERT INTO users (email, name, role, password_hash, disabled, created_at) VALUES (?, ?, 'doctor', 'x', 0, ?)", (e, e, now))
cid = str(uuid.uuid4())
db.execute("INSERT INTO conversations (id, kind, direct_key, created_by, created_at) VALUES (?, 'direct', 'a@c b@c', 'a@c', ?)", (cid, now))
for e in ("a@c", "b@c"): db.execute("INSERT INTO participants (conversation_id, email, joined_at) VALUES (?, ?, ?)", (cid, e, now))
ids = []
db.execute("BEGIN")
for i in range(20000):
    mid = str(uuid.UUID(int=(i + 1) << 64)); ids.append(mid)
    db.execute("INSERT INTO messages (id, conversation_id, seq, sender_email, content, created_at, expires_at, read_at, client_id) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
               (mid, cid, i + 1, "a@c", f"expired note {i} " + "x" * 80, now - 1000, now - 1000 + i, f"{i:012d}-client"))
db.execute("INSERT INTO messages_fts(rowid, content) SELECT rowid, content FROM messages")
db.execute("COMMIT")
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
wal = path + "-wal"

def step(chunk):
    db.execute("BEGIN IMMEDIATE")
    db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk)
    db.execute("COMMIT")

sizes, times = [], []
for k in range(0, 10000, 10):
    before = os.path.getsize(wal) if os.path.exists(wal) else 0
    started = time.perf_counter()
    step(ids[k:k + 10])
    times.append((time.perf_counter() - started) * 1000)
    sizes.append(os.path.getsize(wal) - before)
    if k % 1000 == 990: db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as the service's checkpoints do, now and then
sizes = [s for s in sizes if s >= 0]  # a step right after a checkpoint starts the WAL over
print(f"skipped {sorted(SKIP - {''}) or 'nothing'}: a step of 10 deletes writes {statistics.mean(sizes) / 1024:.1f} KiB "
      f"(p50 {statistics.median(sizes) / 1024:.1f}, max {max(sizes) / 1024:.1f}); takes p50 {statistics.median(times):.2f} ms, "
      f"p99 {sorted(times)[int(len(times) * 0.99)]:.2f} ms")
# One more step on an empty WAL: which b-trees its frames (24-byte header, then the page) belong to.
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
step(ids[15000:15010])
data = open(wal, "rb").read()
page_size = struct.unpack(">I", data[8:12])[0]
frames = (len(data) - 32) // (24 + page_size)
pages = [struct.unpack(">I", data[32 + f * (24 + page_size):36 + f * (24 + page_size)])[0] for f in range(frames)]
names = dict(db.execute("SELECT pageno, name FROM dbstat").fetchall())
print("pages of one step:", dict(collections.Counter(names.get(p, "free or other") for p in pages)))
