"""End-to-end tests with a stock Socket.IO client (python-socketio) against the running
stack (two gateways), over both transports: HTTP long-polling upgraded to WebSocket (the
default of stock clients), WebSocket only, and long-polling only.

    python socketio_e2e.py http://127.0.0.1:PORT1 http://127.0.0.1:PORT2
"""
import sys
import threading
import time
import traceback
import uuid

import requests
import socketio

GW1, GW2 = sys.argv[1], sys.argv[2]
PASSWORD = "password"


def login(email, base=GW1):
    response = requests.post(base + "/api/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    response.raise_for_status()
    return response.json()["token"]


class Recorder:
    """A python-socketio client that records every server event it receives."""

    def __init__(self, email, base, transports, since=None):
        self.events = []
        self.lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        self.connect_error = None
        for name in ["receive_message", "message_sent_confirmed", "message_read_receipt", "error", "user_typing"]:
            self.client.on(name, self._recorder(name))
        self.client.on("connect_error", self._on_connect_error)
        auth = {"token": login(email, base)}
        if since is not None:
            auth["since"] = since
        self.client.connect(base, auth=auth, transports=transports, wait_timeout=10)

    def _recorder(self, name):
        def record(data):
            with self.lock:
                self.events.append((name, data))
        return record

    def _on_connect_error(self, data):
        self.connect_error = data

    def wait_for(self, name, count=1, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                found = [data for (event, data) in self.events if event == name]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {name}, got {self.events}")

    def call(self, event, data):
        return self.client.call(event, data, timeout=10)

    def close(self):
        self.client.disconnect()


def send(to, content):
    return {"receiver_email": to, "content": content, "client_id": str(uuid.uuid4())}


def test_upgrade_and_websocket_across_gateways():
    a = Recorder("doctor@clinic.com", GW1, ["polling", "websocket"])
    b = Recorder("admin@clinic.com", GW2, ["websocket"])
    try:
        assert a.client.transport() == "websocket", a.client.transport()  # upgraded from polling
        ack = a.call("send_message", send("admin@clinic.com", "upgrade path"))
        assert ack["ok"] is True, ack
        message = ack["message"]
        assert message["content"] == "upgrade path" and message["seq"] >= 1
        confirmed = a.wait_for("message_sent_confirmed")[0]
        assert confirmed["id"] == message["id"]
        received = b.wait_for("receive_message")[0]
        assert received["id"] == message["id"] and received["sender_email"] == "doctor@clinic.com"
        # A read receipt flows back.
        receipt = b.call("mark_message_read", {"message_id": message["id"]})
        assert receipt["ok"] is True and receipt["receipt"]["up_to_seq"] == message["seq"], receipt
        seen = a.wait_for("message_read_receipt")[-1]
        assert seen["reader_email"] == "admin@clinic.com" and seen["message_id"] == message["id"], seen
    finally:
        a.close()
        b.close()


def test_polling_only_both_directions():
    c = Recorder("dr.patel@clinic.com", GW1, ["polling"])
    d = Recorder("dr.okafor@clinic.com", GW2, ["polling"])
    try:
        assert c.client.transport() == "polling"
        for i in range(3):
            assert c.call("send_message", send("dr.okafor@clinic.com", f"poll {i}"))["ok"] is True
        got = d.wait_for("receive_message", 3)
        assert [m["content"] for m in got] == ["poll 0", "poll 1", "poll 2"], got
        assert d.call("send_message", send("dr.patel@clinic.com", "poll back"))["ok"] is True
        assert c.wait_for("receive_message")[0]["content"] == "poll back"
    finally:
        c.close()
        d.close()


def test_bad_token_is_a_connect_error():
    client = socketio.Client(reconnection=False)
    errors = []
    client.on("connect_error", lambda data: errors.append(data))
    try:
        client.connect(GW1, auth={"token": "not-a-token"}, transports=["websocket"], wait_timeout=10)
        raise AssertionError("connected with a bad token")
    except socketio.exceptions.ConnectionError:
        pass
    assert errors and "not valid" in errors[0]["message"], errors
    assert errors[0]["data"]["code"] == "unauthorized", errors


def test_bad_input_gets_errors_and_the_socket_survives():
    e = Recorder("dr.novak@clinic.com", GW2, ["polling", "websocket"])
    try:
        unknown = e.call("no_such_event", {})
        assert unknown["ok"] is False and unknown["error"]["code"] == "bad_request", unknown
        wrong = e.call("send_message", "not an object")
        assert wrong["ok"] is False and wrong["error"]["code"] == "bad_request", wrong
        empty = e.call("send_message", {"receiver_email": "admin@clinic.com", "content": "", "client_id": "x-empty"})
        assert empty["error"]["code"] == "invalid_content" and empty["error"]["client_id"] == "x-empty", empty
        e.client.emit("send_message", {"content": 5})
        assert e.wait_for("error")[0]["code"] == "bad_request"
        assert e.call("send_message", send("admin@clinic.com", "still works"))["ok"] is True
    finally:
        e.close()


def test_recovery_with_since_after_reconnect():
    sender = Recorder("dr.garcia@clinic.com", GW1, ["websocket"])
    receiver = Recorder("admin2@clinic.com", GW2, ["polling", "websocket"])
    try:
        first = sender.call("send_message", send("admin2@clinic.com", "before"))["message"]
        receiver.wait_for("receive_message")
        receiver.close()
        for i in range(3):
            sender.call("send_message", send("admin2@clinic.com", f"missed {i}"))
        back = Recorder("admin2@clinic.com", GW1, ["polling", "websocket"], since={first["conversation_id"]: first["seq"]})
        try:
            replayed = back.wait_for("receive_message", 3)
            assert [m["content"] for m in replayed] == ["missed 0", "missed 1", "missed 2"], replayed
            assert [m["seq"] for m in replayed] == [first["seq"] + 1, first["seq"] + 2, first["seq"] + 3]
            summary = back.call("sync", {"since": {first["conversation_id"]: first["seq"] + 3}})
            # Up to date: nothing to replay (a conversation with nothing new is left out of the summary).
            assert summary["ok"] is True and summary["conversations"].get(first["conversation_id"], {"messages": 0})["messages"] == 0, summary
            time.sleep(0.3)
            assert len([e for e in back.events if e[0] == "receive_message"]) == 3, back.events
        finally:
            back.close()
    finally:
        sender.close()


def main():
    tests = [value for name, value in globals().items() if name.startswith("test_")]
    failed = 0
    for test in tests:
        try:
            test()
            print(f"  ok    {test.__name__}")
        except Exception:
            failed += 1
            print(f"  FAIL  {test.__name__}")
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
