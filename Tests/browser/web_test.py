"""Browser tests of the web client with headless Chromium (selenium), against the running
stack: an admin and a doctor in two browser sessions.

    python web_test.py http://127.0.0.1:PORT [--screenshots DIR]

A failing test saves a screenshot of each browser in .build/browser-failures/.
"""
import json
import os
import re
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE = sys.argv[1]
# The stack's Redis, for events only the retention worker would cause (scripts/e2e-browser.sh sets it).
REDIS_PORT = os.environ.get("REDIS_PORT")
SHOTS = sys.argv[sys.argv.index("--screenshots") + 1] if "--screenshots" in sys.argv else None
FAILURES = os.path.join(os.path.dirname(__file__), "..", "..", ".build", "browser-failures")
ADMIN, DOCTOR, PATEL = "admin@clinic.com", "doctor@clinic.com", "dr.patel@clinic.com"


def rest(method, path, token=None, body=None):
    request = urllib.request.Request(BASE + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def token(email):
    return rest("POST", "/api/auth/login", body={"email": email, "password": "password"})["token"]


def browser():
    options = webdriver.ChromeOptions()
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800", "--disable-gpu"]:
        options.add_argument(argument)
    if os.path.exists("/usr/bin/chromium"):
        options.binary_location = "/usr/bin/chromium"
    service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver") if os.path.exists("/usr/bin/chromedriver") else None
    driver = webdriver.Chrome(options=options, service=service) if service else webdriver.Chrome(options=options)
    driver.implicitly_wait(0)
    return driver


def wait(driver, condition, timeout=10, message=""):
    # The page re-renders lists as events arrive: an element found a moment ago may be gone.
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]).until(condition, message)


def open_conversation(driver, title):
    def click(d):
        button = conversation_button(d, title)
        if button is None:
            return False
        button.click()
        return d.find_element(By.ID, "pane-title").text == title
    wait(driver, click, message=f"open {title}")


def login(driver, email, password="password", first_password=None):
    """Logs in and waits for the socket. An account an admin made (or whose password an
    admin set) first chooses `first_password` in the dialog the page then insists on."""
    driver.get(BASE + "/")
    wait(driver, EC.visibility_of_element_located((By.ID, "login-email")))
    driver.find_element(By.ID, "login-email").send_keys(email)
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    if first_password:
        wait(driver, EC.visibility_of_element_located((By.ID, "password-current")), message="the password to choose first")
        for field, value in [("password-current", password), ("password-new", first_password), ("password-again", first_password)]:
            driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "password-save").click()
    wait(driver, EC.visibility_of_element_located((By.ID, "app-view")))
    wait(driver, lambda d: d.find_element(By.ID, "connection").text == "Online", message="socket online")


def conversation_button(driver, title):
    for button in driver.find_elements(By.CSS_SELECTOR, "#conversation-list .conversation"):
        if button.find_element(By.CSS_SELECTOR, ".conversation-title").text == title:
            return button
    return None


def pick_person(driver, name):
    """Ticks `name` in the new-message dialog's results. The results re-render as the
    search text arrives, so an element found a moment ago may be gone: retried until the
    tick holds (the page keeps the choice across re-renders)."""
    def tick(d):
        for person in d.find_elements(By.CSS_SELECTOR, "#people-results .person"):
            if name in person.text:
                box = person.find_element(By.CSS_SELECTOR, "input[type=checkbox]")
                if not box.is_selected():
                    box.click()
                return box.is_selected()
        return False
    wait(driver, tick, message=f"pick {name}")


def badge(driver, title):
    """The unread badge of the conversation titled `title` ("" for none, None if not listed).
    The list is drawn again whenever anything in it changes (a presence event, which since
    the presence grace comes seconds after an earlier test's page closed): read again if
    it changed under the read."""
    for _ in range(20):
        try:
            button = conversation_button(driver, title)
            if not button:
                return None
            badges = button.find_elements(By.CSS_SELECTOR, ".badge")
            return badges[0].text if badges else ""
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"the list kept changing while the badge of {title} was read")


def texts(driver):
    return [node.text for node in driver.find_elements(By.CSS_SELECTOR, "#messages .message .text")]


def send(driver, text):
    box = driver.find_element(By.ID, "composer-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


class Session:
    def __init__(self):
        self.browsers = []

    def new(self):
        driver = browser()
        self.browsers.append(driver)
        return driver

    def close(self, failed_name=None):
        for index, driver in enumerate(self.browsers):
            if failed_name:
                os.makedirs(FAILURES, exist_ok=True)
                path = os.path.join(FAILURES, f"{failed_name}-{index}.png")
                driver.save_screenshot(path)
                print(f"        screenshot: {os.path.abspath(path)}")
            driver.quit()


def test_login_errors(s):
    driver = s.new()
    driver.get(BASE + "/")
    wait(driver, EC.visibility_of_element_located((By.ID, "login-email")))
    if SHOTS:
        driver.save_screenshot(os.path.join(SHOTS, "login.png"))
    driver.find_element(By.ID, "login-email").send_keys(ADMIN)
    driver.find_element(By.ID, "login-password").send_keys("wrong password")
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, lambda d: "Wrong email or password" in d.find_element(By.ID, "login-error").text)


def test_admin_and_doctor(s):
    admin, doctor = s.new(), s.new()
    login(admin, ADMIN)
    login(doctor, DOCTOR)

    # The admin finds the doctor and starts a 1:1.
    admin.find_element(By.ID, "new-message").click()
    wait(admin, EC.visibility_of_element_located((By.ID, "people-search")))
    admin.find_element(By.ID, "people-search").send_keys("kim")
    wait(admin, lambda d: any("Dr. Sarah Kim" in n.text for n in d.find_elements(By.CSS_SELECTOR, "#people-results .person")))
    if SHOTS:
        admin.save_screenshot(os.path.join(SHOTS, "new-message.png"))
    pick_person(admin, "Dr. Sarah Kim")
    admin.find_element(By.ID, "new-start").click()
    wait(admin, lambda d: d.find_element(By.ID, "pane-title").text == "Dr. Sarah Kim")

    # It arrives without a reload, with an unread badge.
    send(admin, "Lab results for bed 4 are in")
    wait(doctor, lambda d: badge(d, "Alex Morgan") == "1", message="badge 1 at the doctor")
    send(admin, "Please call back")
    wait(doctor, lambda d: badge(d, "Alex Morgan") == "2", message="badge 2 at the doctor")
    # Confirmed: a single tick, not yet blue.
    wait(admin, lambda d: [t.get_attribute("data-state") for t in d.find_elements(By.CSS_SELECTOR, "#messages .tick")] == ["sent", "sent"])

    # The list shows the partner's presence and role; the header says online; incoming text is announced.
    wait(admin, lambda d: "online" in conversation_button(d, "Dr. Sarah Kim").find_element(By.CSS_SELECTOR, ".dot").get_attribute("class"))
    wait(admin, lambda d: conversation_button(d, "Dr. Sarah Kim").find_element(By.CSS_SELECTOR, ".role").text.lower() == "doctor",
         message="the role in the list")
    assert admin.find_element(By.ID, "pane-status").text == "Online"
    wait(doctor, lambda d: "Please call back" in d.find_element(By.ID, "announcer").get_attribute("textContent"))
    # The doctor opens it: the badge clears and the admin's ticks turn blue.
    open_conversation(doctor, "Alex Morgan")
    wait(doctor, lambda d: texts(d) == ["Lab results for bed 4 are in", "Please call back"])
    wait(doctor, lambda d: badge(d, "Alex Morgan") == "")
    wait(admin, lambda d: [t.get_attribute("data-state") for t in d.find_elements(By.CSS_SELECTOR, "#messages .tick")] == ["read", "read"],
         message="blue ticks")

    # Typing shows and clears.
    doctor.find_element(By.ID, "composer-input").send_keys("On my")
    wait(admin, lambda d: d.find_element(By.ID, "typing").text == "Dr. Sarah Kim is typing…", message="typing shown")
    wait(admin, lambda d: d.find_element(By.ID, "typing").text == "", timeout=12, message="typing cleared")
    doctor.find_element(By.ID, "composer-input").send_keys(" way" + Keys.ENTER)
    wait(admin, lambda d: "On my way" in texts(d))
    # Shift+Enter is a new line, Enter sends; messages of a day sit under its separator.
    box = admin.find_element(By.ID, "composer-input")
    box.send_keys("line one")
    box.send_keys(Keys.SHIFT, Keys.ENTER)
    box.send_keys("line two" + Keys.ENTER)
    wait(doctor, lambda d: "line one\nline two" in texts(d))
    assert len(admin.find_elements(By.CSS_SELECTOR, "#messages .day")) == 1
    if SHOTS:
        admin.save_screenshot(os.path.join(SHOTS, "messaging.png"))

    # Markup is shown as text and never runs.
    attack = "<img src=x onerror=alert(1)>"
    send(admin, attack)
    wait(doctor, lambda d: attack in texts(d))
    assert not doctor.find_elements(By.CSS_SELECTOR, "#messages img"), "an img element was created"
    try:
        doctor.switch_to.alert
        raise AssertionError("an alert ran")
    except NoAlertPresentException:
        pass

    # A reload keeps the session and the history.
    doctor.refresh()
    wait(doctor, lambda d: d.find_element(By.ID, "connection").text == "Online")
    open_conversation(doctor, "Alex Morgan")
    wait(doctor, lambda d: texts(d)[:2] == ["Lab results for bed 4 are in", "Please call back"] and attack in texts(d))


def test_scroll_loads_older(s):
    patel_token = token(PATEL)
    for i in range(45):
        rest("POST", "/api/messages", patel_token, {"receiver_email": ADMIN, "content": f"history {i:02d}", "client_id": f"hist-{uuid.uuid4()}"})
    admin = s.new()
    login(admin, ADMIN)
    open_conversation(admin, "Dr. Ravi Patel")
    wait(admin, lambda d: len(texts(d)) == 30, message="the latest 30")
    assert texts(admin)[-1] == "history 44", texts(admin)[-1]
    admin.execute_script("document.getElementById('messages').scrollTop = 0")
    wait(admin, lambda d: len(texts(d)) == 45, message="older messages loaded")
    assert texts(admin)[0] == "history 00"
    # The reader stays where they were: not thrown to the top or the bottom.
    top = admin.execute_script("return document.getElementById('messages').scrollTop")
    assert top > 0, top


def test_group_search_ticks_and_logout(s):
    admin, okafor = s.new(), s.new()
    login(admin, ADMIN)
    login(okafor, "dr.okafor@clinic.com")
    # A group of two others, by role filter and search.
    admin.find_element(By.ID, "new-message").click()
    wait(admin, EC.visibility_of_element_located((By.ID, "people-search")))
    admin.find_element(By.CSS_SELECTOR, "#people-role option[value=doctor]").click()
    wait(admin, lambda d: d.find_elements(By.CSS_SELECTOR, "#people-results .person"))
    roles = {n.text.lower() for n in admin.find_elements(By.CSS_SELECTOR, "#people-results .person .role")}
    assert roles == {"doctor"}, roles
    for name in ["Dr. Ada Okafor", "Dr. Jan Novak"]:
        search = admin.find_element(By.ID, "people-search")
        search.clear()
        search.send_keys(name.split()[-1])
        pick_person(admin, name)
    admin.find_element(By.ID, "new-start").click()
    wait(admin, lambda d: "title" in d.find_element(By.ID, "new-error").text)
    admin.find_element(By.ID, "group-title").send_keys("Night shift")
    admin.find_element(By.ID, "new-start").click()
    wait(admin, lambda d: d.find_element(By.ID, "pane-title").text == "Night shift")
    send(admin, "Handover at 7, bring the sepsis charts")
    wait(okafor, lambda d: badge(d, "Night shift") == "1", message="the group reaches a member")
    # Message search finds it and opens the conversation.
    okafor.find_element(By.ID, "search-input").send_keys("sepsis")
    wait(okafor, lambda d: any("sepsis" in n.text for n in d.find_elements(By.CSS_SELECTOR, "#search-results .search-hit")))
    okafor.find_element(By.CSS_SELECTOR, "#search-results .search-hit").click()
    wait(okafor, lambda d: d.find_element(By.ID, "pane-title").text == "Night shift" and "Handover at 7, bring the sepsis charts" in texts(d))
    # Group ticks: read by one of the two is not "read"; it turns blue once both have read.
    def tick(d):
        marks = d.find_elements(By.CSS_SELECTOR, "#messages .message.own .tick")
        return (marks[-1].get_attribute("data-state"), marks[-1].get_attribute("aria-label"), marks[-1].get_attribute("title")) if marks else None
    wait(admin, lambda d: tick(d) == ("partly", "read by 1 of 2", "Read by Dr. Ada Okafor"), message="read by one of two")
    novak = token("dr.novak@clinic.com")
    group = next(c for c in rest("GET", "/api/conversations", novak) if c.get("title") == "Night shift")
    positions = group["read_positions"]
    assert set(positions) == {ADMIN, "dr.novak@clinic.com", "dr.okafor@clinic.com"} and positions["dr.okafor@clinic.com"] == 1 \
        and positions["dr.novak@clinic.com"] == 0, positions
    rest("POST", f"/api/conversations/{group['id']}/read", novak, {"up_to_seq": 1})
    wait(admin, lambda d: tick(d) == ("read", "read by everyone", "Read by Dr. Jan Novak, Dr. Ada Okafor"), message="read by both")
    # A reload starts from the markers in the conversation list.
    admin.refresh()
    wait(admin, lambda d: d.find_element(By.ID, "connection").text == "Online")
    open_conversation(admin, "Night shift")
    wait(admin, lambda d: tick(d) == ("read", "read by everyone", "Read by Dr. Jan Novak, Dr. Ada Okafor"), message="read by both after a reload")
    # Logout clears the session: a reload shows the login page.
    okafor.find_element(By.ID, "logout-button").click()
    wait(okafor, EC.visibility_of_element_located((By.ID, "login-email")))
    okafor.refresh()
    wait(okafor, EC.visibility_of_element_located((By.ID, "login-email")))
    assert okafor.execute_script("return localStorage.getItem('clinic.session')") is None


def test_rest_fallback_while_the_socket_is_down(s):
    conversation = rest("POST", "/api/conversations", token(ADMIN), {"participants": [DOCTOR]})
    doctor = s.new()
    login(doctor, DOCTOR)
    admin = s.new()
    # This browser's WebSocket never connects (as behind a proxy that drops it); REST still works.
    admin.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        window.WebSocket = class { constructor() { this.readyState = 3; setTimeout(() => this.onclose && this.onclose(), 20); }
                                   send() {} close() {} };
        window.WebSocket.OPEN = 1;
    """})
    admin.get(BASE + "/")
    wait(admin, EC.visibility_of_element_located((By.ID, "login-email")))
    admin.find_element(By.ID, "login-email").send_keys(ADMIN)
    admin.find_element(By.ID, "login-password").send_keys("password")
    admin.find_element(By.ID, "login-submit").click()
    wait(admin, lambda d: d.find_element(By.ID, "connection").text == "Reconnecting…", message="the socket is down")
    open_conversation(admin, "Dr. Sarah Kim")
    send(admin, "Sent while the socket is down")
    # Stored through REST: confirmed at the sender, delivered live to the doctor.
    wait(admin, lambda d: [t.get_attribute("data-state") for t in d.find_elements(By.CSS_SELECTOR, "#messages .tick")][-1:] == ["sent"],
         message="confirmed through REST")
    wait(doctor, lambda d: badge(d, "Alex Morgan") not in (None, "", "0"), message="the doctor is told")
    open_conversation(doctor, "Alex Morgan")
    wait(doctor, lambda d: "Sent while the socket is down" in texts(d))

    # The network drops the next send too: it stays, marked, with Retry; Retry stores it once.
    admin.execute_script("""
        const real = window.fetch; let failOnce = true;
        window.fetch = (url, options) => {
          if (failOnce && String(url).endsWith('/api/messages')) { failOnce = false; return Promise.reject(new TypeError('network down')); }
          return real(url, options);
        };
    """)
    send(admin, "Retry me")
    wait(admin, lambda d: d.find_elements(By.CSS_SELECTOR, "#messages .retry"), message="a Retry button")
    assert admin.find_elements(By.CSS_SELECTOR, "#messages .tick")[-1].get_attribute("data-state") == "failed"
    admin.find_element(By.CSS_SELECTOR, "#messages .retry").click()
    wait(admin, lambda d: not d.find_elements(By.CSS_SELECTOR, "#messages .retry")
         and d.find_elements(By.CSS_SELECTOR, "#messages .tick")[-1].get_attribute("data-state") in ("sent", "read"))
    wait(doctor, lambda d: texts(d).count("Retry me") == 1)
    time.sleep(0.5)
    assert texts(doctor).count("Retry me") == 1

    # The page's client ids are UUIDs of version 7 that start with the time of the send
    # (the store's index of client ids then grows at its end).
    history = rest("GET", f"/api/conversations/{conversation['id']}/messages?limit=30", token(ADMIN))
    sent = [m for m in history if m["content"] in ("Sent while the socket is down", "Retry me")]
    assert len(sent) == 2, history
    for message in sent:
        client_id = message["client_id"]
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", client_id), client_id
        millis = int(client_id.replace("-", "")[:12], 16)
        assert abs(millis / 1000 - time.time()) < 120, (client_id, time.time())
    assert sent[0]["client_id"] < sent[1]["client_id"]


def test_purged_messages_leave_the_open_conversation(s):
    # Retention's messages_purged event, as the messages service publishes it on the user's
    # channel, with the id of a real message: the page drops it, and keeps the others.
    if not REDIS_PORT:
        raise AssertionError("REDIS_PORT is not set: run through scripts/e2e-browser.sh")
    conversation = rest("POST", "/api/conversations", token(ADMIN), {"participants": [DOCTOR]})
    admin_token = token(ADMIN)
    marker = uuid.uuid4().hex[:8]
    doomed = rest("POST", "/api/messages", admin_token, {"conversation_id": conversation["id"], "content": f"expiring {marker}", "client_id": str(uuid.uuid4())})
    rest("POST", "/api/messages", admin_token, {"conversation_id": conversation["id"], "content": f"staying {marker}", "client_id": str(uuid.uuid4())})
    doctor = s.new()
    login(doctor, DOCTOR)
    open_conversation(doctor, "Alex Morgan")
    wait(doctor, lambda d: f"expiring {marker}" in texts(d) and f"staying {marker}" in texts(d))
    event = {"event": "messages_purged", "data": {"conversation_id": conversation["id"], "message_ids": [doomed["id"]]}}
    subprocess.run(["redis-cli", "-p", REDIS_PORT, "PUBLISH", "user:" + DOCTOR, json.dumps(event)], check=True, capture_output=True)
    wait(doctor, lambda d: f"expiring {marker}" not in texts(d), message="the purged message is gone")
    assert f"staying {marker}" in texts(doctor)


def test_phone_width(s):
    phone = s.new()
    phone.set_window_size(390, 800)
    login(phone, DOCTOR)
    wait(phone, lambda d: conversation_button(d, "Alex Morgan") is not None)
    # One column: the list, then the conversation with a way back.
    assert phone.find_element(By.ID, "conversation-list").is_displayed()
    open_conversation(phone, "Alex Morgan")
    assert not phone.find_element(By.ID, "conversation-list").is_displayed()
    phone.find_element(By.ID, "back-button").click()
    wait(phone, lambda d: d.find_element(By.ID, "conversation-list").is_displayed())
    width = phone.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, f"wider than the phone: {width}"


def test_resync_after_reconnect_and_new_messages_pill(s):
    patel_token = token(PATEL)
    admin = s.new()
    # A WebSocket this test can hold down and let through again.
    admin.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const RealWebSocket = window.WebSocket;
        window.__socketAllowed = true;
        window.__sockets = [];
        window.WebSocket = function (url) {
          if (!window.__socketAllowed) {
            const fake = { readyState: 3, send() {}, close() {} };
            setTimeout(() => fake.onclose && fake.onclose(), 20);
            return fake;
          }
          const socket = new RealWebSocket(url);
          window.__sockets.push(socket);
          return socket;
        };
        window.WebSocket.OPEN = RealWebSocket.OPEN;
        window.__listLoads = 0;
        const realFetch = window.fetch;
        window.fetch = function (path, options) {
          if (String(path) === '/api/conversations' && (!options || options.method === 'GET')) window.__listLoads += 1;
          return realFetch.apply(this, arguments);
        };
    """})
    login(admin, ADMIN)
    wait(admin, lambda d: d.find_element(By.ID, "connection").text == "Online", timeout=15)
    time.sleep(1)
    # Opened: the list once, before the socket; its first `sync` replays what came after.
    assert admin.execute_script("return window.__listLoads") == 1, admin.execute_script("return window.__listLoads")
    open_conversation(admin, "Dr. Ravi Patel")
    wait(admin, lambda d: len(texts(d)) >= 1)
    asked = f"are you on the ward {uuid.uuid4().hex[:6]}"
    send(admin, asked)
    def own_tick(d):
        marks = d.find_elements(By.CSS_SELECTOR, "#messages .message.own")
        mine = [m for m in marks if asked in m.text]
        return mine[-1].find_element(By.CSS_SELECTOR, ".tick").get_attribute("data-state") if mine else None
    wait(admin, lambda d: own_tick(d) not in (None, "pending"), message="the question is confirmed")
    assert own_tick(admin) != "read"
    # The connection drops and stays down while Dr. Patel reads the question and writes.
    admin.execute_script("window.__socketAllowed = false; window.__sockets.forEach((s) => s.close());")
    wait(admin, lambda d: d.find_element(By.ID, "connection").text == "Reconnecting…")
    direct = next(c for c in rest("GET", "/api/conversations", patel_token) if c["kind"] == "direct" and ADMIN in c["participants"])
    rest("POST", f"/api/conversations/{direct['id']}/read", patel_token, {})
    rest("POST", "/api/messages", patel_token, {"receiver_email": ADMIN, "content": "written while you were away", "client_id": f"away-{uuid.uuid4()}"})
    # And a group the page has never seen, with ten messages: the replay brings them all,
    # and the page reloads its list for them once or twice, not ten times.
    away = f"Away {uuid.uuid4().hex[:6]}"
    group = rest("POST", "/api/conversations", patel_token, {"participants": [ADMIN], "title": away})
    for i in range(10):
        rest("POST", "/api/messages", patel_token, {"conversation_id": group["id"], "content": f"away {i}", "client_id": f"away-{group['id']}-{i}"})
    time.sleep(1)
    loads_before = admin.execute_script("return window.__listLoads")
    assert "written while you were away" not in texts(admin)
    # Back: the page's `sync` names what it has, and the gateway replays the rest.
    admin.execute_script("window.__socketAllowed = true;")
    wait(admin, lambda d: d.find_element(By.ID, "connection").text == "Online", timeout=15)
    wait(admin, lambda d: "written while you were away" in texts(d), message="replayed after the reconnect")
    assert texts(admin).count("written while you were away") == 1
    # The receipt made while the page was away shows (replayed after the sync's
    # receipts_after, and in the list reloaded when back online).
    wait(admin, lambda d: own_tick(d) == "read", message="read while the page was away")
    wait(admin, lambda d: badge(d, away) == "10", message="the new group, with its unread count")
    time.sleep(1)
    loads = admin.execute_script("return window.__listLoads") - loads_before
    assert 1 <= loads <= 3, f"{loads} reloads of the list"

    # Scrolled up, a new message shows the pill instead of moving the page.
    admin.execute_script("const m = document.getElementById('messages'); m.scrollTop = m.scrollHeight / 3;")
    time.sleep(0.5)
    rest("POST", "/api/messages", patel_token, {"receiver_email": ADMIN, "content": "another one", "client_id": f"pill-{uuid.uuid4()}"})
    wait(admin, lambda d: d.find_element(By.ID, "new-pill").is_displayed(), message="the new-messages pill")
    admin.find_element(By.ID, "new-pill").click()
    wait(admin, lambda d: not d.find_element(By.ID, "new-pill").is_displayed())
    assert admin.execute_script("const m = document.getElementById('messages'); return m.scrollHeight - m.scrollTop - m.clientHeight") < 40

    def away_and_back(missed):
        admin.execute_script("window.__socketAllowed = false; window.__sockets.forEach((s) => s.close());")
        wait(admin, lambda d: d.find_element(By.ID, "connection").text == "Reconnecting…")
        for text in missed:
            rest("POST", "/api/messages", patel_token, {"receiver_email": ADMIN, "content": text, "client_id": f"back-{uuid.uuid4()}"})
        before = admin.execute_script("return window.__listLoads")
        admin.execute_script("window.__socketAllowed = true;")
        wait(admin, lambda d: d.find_element(By.ID, "connection").text == "Online", timeout=15)
        wait(admin, lambda d: missed[-1] in texts(d), message="replayed after the reconnect")
        time.sleep(1)
        return admin.execute_script("return window.__listLoads") - before
    # Back after a message in a conversation the page knows: the replay carries it all,
    # and the list is not reloaded (pages all back at once after their gateway went away
    # cost the store a replay each, not a list each).
    marker = uuid.uuid4().hex[:6]
    assert away_and_back([f"one missed {marker}"]) == 0
    # Back after more than a replay carries (500): the list is reloaded.
    assert away_and_back([f"many missed {marker} {i}" for i in range(510)]) >= 1


def test_page_load_replays_nothing_it_already_has(s):
    # Dr. Patel writes twice to Dr. Okafor, who then opens the app: the list (over REST)
    # already has the unread count; the page's first `sync` names every conversation of the
    # list, so the gateway replays nothing, and nothing old is counted or announced again.
    okafor_email = "dr.okafor@clinic.com"
    patel_token, okafor_token = token(PATEL), token(okafor_email)
    marker = uuid.uuid4().hex[:8]
    # Dr. Patel has read what Dr. Okafor wrote: a read marker the list already shows.
    asked = rest("POST", "/api/messages", okafor_token, {"receiver_email": PATEL, "content": f"page load ask {marker}", "client_id": f"pl-{marker}-ask"})
    rest("POST", f"/api/conversations/{asked['conversation_id']}/read", patel_token, {"up_to_seq": asked["seq"]})
    for i in range(2):
        rest("POST", "/api/messages", patel_token, {"receiver_email": okafor_email, "content": f"page load {i} {marker}", "client_id": f"pl-{marker}-{i}"})
    counts = rest("GET", "/api/messages/unread-count", okafor_token)
    conversation = next(c for c in rest("GET", "/api/conversations", okafor_token) if PATEL in c["participants"] and c["kind"] == "direct")
    expected = counts["conversations"][conversation["id"]]
    assert expected >= 2, counts
    okafor = s.new()
    # Counts the messages and receipts the socket is given.
    okafor.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const RealWebSocket = window.WebSocket;
        window.__replayed = 0;
        window.__receipts = 0;
        window.WebSocket = function (url) {
          const socket = new RealWebSocket(url);
          socket.addEventListener('message', (event) => {
            if (String(event.data).startsWith('42["receive_message"')) window.__replayed += 1;
            if (String(event.data).startsWith('42["message_read_receipt"')) window.__receipts += 1;
          });
          return socket;
        };
        window.WebSocket.OPEN = RealWebSocket.OPEN;
    """})
    login(okafor, okafor_email)
    wait(okafor, lambda d: badge(d, "Dr. Ravi Patel") == str(expected), message=f"badge {expected}")
    time.sleep(1.5)  # a replay would have arrived by now
    assert badge(okafor, "Dr. Ravi Patel") == str(expected), badge(okafor, "Dr. Ravi Patel")
    assert okafor.execute_script("return window.__replayed") == 0, okafor.execute_script("return window.__replayed")
    # Nor Dr. Patel's read marker: the sync's receipts_after is the list's read_version.
    assert okafor.execute_script("return window.__receipts") == 0, okafor.execute_script("return window.__receipts")
    assert okafor.find_element(By.ID, "announcer").get_attribute("textContent") == ""
    # What comes next still counts, and is announced.
    rest("POST", "/api/messages", patel_token, {"receiver_email": okafor_email, "content": f"and now {marker}", "client_id": f"pl-{marker}-2"})
    wait(okafor, lambda d: badge(d, "Dr. Ravi Patel") == str(expected + 1), message="a live message counts")
    assert f"and now {marker}" in okafor.find_element(By.ID, "announcer").get_attribute("textContent")


def test_read_marks_are_coalesced(s):
    # Dr. Garcia writes 40 messages in a burst to Priya Raman, who has the conversation
    # open. The page marks it read one mark at a time, 300 ms apart at most one in flight,
    # each for the newest message it has: far fewer marks than messages, each further on,
    # the last at the last message (a mark per message was a store write and a receipt to
    # every member each, and in a busy group hit the gateway's rate limit).
    reader_email, writer_email = "admin2@clinic.com", "dr.garcia@clinic.com"
    writer_token = token(writer_email)
    conversation = rest("POST", "/api/conversations", writer_token, {"participants": [reader_email]})
    rest("POST", "/api/messages", writer_token, {"conversation_id": conversation["id"], "content": "before the burst", "client_id": f"rm-{uuid.uuid4()}"})
    reader = s.new()
    reader.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        window.__marks = [];
        const realSend = WebSocket.prototype.send;
        WebSocket.prototype.send = function (data) {
          const text = String(data);
          const match = /^42[0-9]*\\["mark_conversation_read",(.*)\\]$/.exec(text);
          if (match) window.__marks.push(JSON.parse(match[1]).up_to_seq);
          return realSend.apply(this, arguments);
        };
        const realFetch = window.fetch;
        window.fetch = function (path, options) {
          if (/\\/read$/.test(String(path))) window.__marks.push(JSON.parse(options.body).up_to_seq);
          return realFetch.apply(this, arguments);
        };
    """})
    login(reader, reader_email)
    open_conversation(reader, "Dr. Lucia Garcia")
    wait(reader, lambda d: "before the burst" in texts(d))
    last = None
    for i in range(40):
        last = rest("POST", "/api/messages", writer_token, {"conversation_id": conversation["id"], "content": f"burst {i}", "client_id": f"rm-{uuid.uuid4()}"})
    def marked(_):
        listed = next(c for c in rest("GET", "/api/conversations", writer_token) if c["id"] == conversation["id"])
        return listed["read_positions"].get(reader_email) == last["seq"]
    wait(reader, marked, message="the reader's marker reaches the last message")
    wait(reader, lambda d: "burst 39" in texts(d))
    marks = reader.execute_script("return window.__marks")
    assert marks and marks[-1] == last["seq"], marks
    assert all(a < b for a, b in zip(marks, marks[1:])), marks
    assert len(marks) < 40, f"{len(marks)} marks for 40 messages: {marks}"


def drop_frames_saying(driver, text):
    """The page's WebSockets never hand it a frame that contains `text` (as if lost)."""
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const dropped = %s;
        const RealWebSocket = window.WebSocket;
        window.WebSocket = function (url) {
          const socket = new RealWebSocket(url);
          const realAdd = socket.addEventListener.bind(socket);
          socket.addEventListener = (type, listener, options) => realAdd(type, (event) => {
            if (type === 'message' && String(event.data).includes(dropped)) return;
            listener(event);
          }, options);
          Object.defineProperty(socket, 'onmessage', { set(listener) {
            realAdd('message', (event) => { if (!String(event.data).includes(dropped)) listener(event); });
          } });
          return socket;
        };
        window.WebSocket.OPEN = RealWebSocket.OPEN;
    """ % json.dumps(text)})


def novak_reading_okafor(s, first, dropped):
    """Dr. Okafor's 1:1 with Dr. Novak holding `first`, open in a new page of Dr. Novak's
    whose WebSocket drops every frame saying `dropped`: (page, conversation, Okafor's token)."""
    novak_email, okafor_token = "dr.novak@clinic.com", token("dr.okafor@clinic.com")
    conversation = rest("POST", "/api/conversations", okafor_token, {"participants": [novak_email]})
    rest("POST", "/api/messages", okafor_token, {"conversation_id": conversation["id"], "content": first, "client_id": f"first-{uuid.uuid4()}"})
    novak = s.new()
    drop_frames_saying(novak, dropped)
    login(novak, novak_email)
    open_conversation(novak, "Dr. Ada Okafor")
    wait(novak, lambda d: first in texts(d))
    return novak, conversation, okafor_token


def test_missed_messages_are_fetched(s):
    # Dr. Okafor writes four messages to Dr. Novak, who has the conversation open; the
    # first two never reach the page (the test's WebSocket drops them, as a replay cut at
    # its limit or a socket that missed them would). The third shows the gap, and the page
    # fetches what is between over REST: all four, in order, each once.
    marker = uuid.uuid4().hex[:6]
    novak, conversation, okafor_token = novak_reading_okafor(s, f"before the gap {marker}", "dropped by the test")
    sent = [f"one {marker} dropped by the test", f"two {marker} dropped by the test", f"three {marker}", f"four {marker}"]
    for i, text in enumerate(sent):
        rest("POST", "/api/messages", okafor_token, {"conversation_id": conversation["id"], "content": text, "client_id": f"gap-{marker}-{i + 1}"})
    wait(novak, lambda d: all(text in texts(d) for text in sent), message="the missed messages fetched")
    shown = [t for t in texts(novak) if marker in t]
    assert shown == [f"before the gap {marker}"] + sent, shown


def test_open_conversation_caught_up_by_a_list_reload(s):
    # Dr. Okafor writes three messages to Dr. Novak, who has the conversation open, and
    # none reaches the page (its WebSocket drops them, as a replay that left the
    # conversation out would): no later message shows a gap. Then Dr. Patel writes from a
    # conversation the page does not know, so it reloads its list, where the open
    # conversation's last message is newer than the page's: the page fetches the three.
    novak_email, marker = "dr.novak@clinic.com", uuid.uuid4().hex[:6]
    novak, conversation, okafor_token = novak_reading_okafor(s, f"seen {marker}", f"lost {marker}")
    lost = [f"lost {marker} {i}" for i in range(1, 4)]
    for i, text in enumerate(lost):
        last = rest("POST", "/api/messages", okafor_token, {"conversation_id": conversation["id"], "content": text, "client_id": f"cu-{marker}-{i + 1}"})
    time.sleep(1)
    assert not any(text in texts(novak) for text in lost), "the page's WebSocket let a message through"
    group = rest("POST", "/api/conversations", token(PATEL), {"participants": [novak_email], "title": f"Ward {marker}"})
    rest("POST", "/api/messages", token(PATEL), {"conversation_id": group["id"], "content": f"new conversation {marker}", "client_id": f"cu-{marker}-g"})
    wait(novak, lambda d: conversation_button(d, f"Ward {marker}") is not None, message="the list reloaded")
    wait(novak, lambda d: all(text in texts(d) for text in lost), message="the open conversation caught up")
    shown = [t for t in texts(novak) if marker in t]
    assert shown == [f"seen {marker}"] + lost, shown
    def read(_):
        listed = next(c for c in rest("GET", "/api/conversations", okafor_token) if c["id"] == conversation["id"])
        return listed["read_positions"].get(novak_email) == last["seq"]
    wait(novak, read, message="the page marks what it caught up on read")


def test_list_reloaded_after_a_lost_subscription(s):
    # A group is created with Dr. Novak in it (no event reaches the page until a message
    # does). Then Redis drops the gateway's subscriber connection: the gateway resubscribes,
    # replays what the page missed and tells it `resynchronized`, and the page reloads its
    # list, where the group now is.
    novak = s.new()
    login(novak, "dr.novak@clinic.com")
    title = f"Pharmacy {uuid.uuid4().hex[:6]}"
    rest("POST", "/api/conversations", token("dr.okafor@clinic.com"), {"participants": ["dr.novak@clinic.com"], "title": title})
    time.sleep(1)
    assert conversation_button(novak, title) is None, "no event announces a new empty group"
    if not REDIS_PORT:
        raise AssertionError("REDIS_PORT is not set: run through scripts/e2e-browser.sh")
    clients = subprocess.run(["redis-cli", "-p", REDIS_PORT, "CLIENT", "LIST"], check=True, capture_output=True, text=True).stdout
    ids = [line.split("id=")[1].split(" ")[0] for line in clients.splitlines() if "name=chat-gateway-subscriber" in line]
    assert ids, clients
    for client in ids:
        subprocess.run(["redis-cli", "-p", REDIS_PORT, "CLIENT", "KILL", "ID", client], check=True, capture_output=True)
    wait(novak, lambda d: conversation_button(d, title) is not None, message="the list reloaded after the resync")


def test_notifications_while_hidden(s):
    patel_token = token(PATEL)
    admin = s.new()
    # A recording Notification (headless Chromium has none to grant) and a tab the test can hide.
    admin.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        window.__shown = [];
        window.Notification = class {
          constructor(title, options) { window.__shown.push({ title, body: options && options.body }); }
          static requestPermission() { window.Notification.permission = 'granted'; return Promise.resolve('granted'); }
        };
        window.Notification.permission = 'default';
        window.__hidden = false;
        Object.defineProperty(document, 'hidden', { get: () => window.__hidden });
    """})
    login(admin, ADMIN)
    button = admin.find_element(By.ID, "notify-button")
    assert button.is_displayed(), "asks for permission from a click"
    button.click()
    wait(admin, lambda d: not d.find_element(By.ID, "notify-button").is_displayed())
    admin.execute_script("window.__hidden = true;")
    rest("POST", "/api/messages", patel_token, {"receiver_email": ADMIN, "content": "Bed 7 needs you", "client_id": f"note-{uuid.uuid4()}"})
    wait(admin, lambda d: d.execute_script("return window.__shown.length") >= 1, message="a notification")
    shown = admin.execute_script("return window.__shown")[-1]
    assert shown == {"title": "Message from Dr. Ravi Patel", "body": "Bed 7 needs you"}, shown
    wait(admin, lambda d: d.title.startswith("("), message="unread total in the title")


def test_logout_elsewhere_ends_the_page_session(s):
    driver = s.new()
    login(driver, "dr.okafor@clinic.com")
    page_token = driver.execute_script("return JSON.parse(localStorage.getItem('clinic.session')).token")
    rest("POST", "/api/auth/logout", page_token)  # the token is revoked (another tab logged out)
    wait(driver, EC.visibility_of_element_located((By.ID, "login-email")), message="back to login")
    assert "session has ended" in driver.find_element(By.ID, "login-error").text


def test_change_password(s):
    # A user of its own (admin-made), so the demo accounts' passwords stay as the other tests expect.
    email = f"pw-{uuid.uuid4().hex[:8]}@clinic.com"
    admin_token = token(ADMIN)
    rest("POST", "/api/admin/users", admin_token, {"email": email, "name": "Dr. Pat Reyes", "role": "doctor", "password": "set-by-admin-0"})
    driver = s.new()
    # Made by an admin: the page lets the user in only once they chose their own password.
    driver.get(BASE + "/")
    wait(driver, EC.visibility_of_element_located((By.ID, "login-email")))
    driver.find_element(By.ID, "login-email").send_keys(email)
    driver.find_element(By.ID, "login-password").send_keys("set-by-admin-0")
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, EC.visibility_of_element_located((By.ID, "password-current")), message="the password to choose first")
    assert "administrator set your password" in driver.find_element(By.ID, "password-hint").text
    assert driver.find_element(By.ID, "password-cancel").text == "Log out"
    driver.find_element(By.ID, "password-current").send_keys(Keys.ESCAPE)
    time.sleep(0.3)
    assert driver.find_element(By.ID, "password-dialog").is_displayed(), "Escape does not get past it"
    assert not driver.find_element(By.ID, "app-view").is_displayed()
    blocked = driver.execute_script("return JSON.parse(localStorage.getItem('clinic.session')).token")
    try:
        rest("GET", "/api/conversations", blocked)
        raise AssertionError("the API answered before the password was changed")
    except urllib.error.HTTPError as error:
        assert error.code == 403, error.code
    for field, value in [("password-current", "set-by-admin-0"), ("password-new", "first-password-1"), ("password-again", "first-password-1")]:
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.ID, "password-save").click()
    wait(driver, lambda d: d.find_element(By.ID, "connection").text == "Online", message="in, and online, with a password of its own")
    old_token = driver.execute_script("return JSON.parse(localStorage.getItem('clinic.session')).token")

    def attempt(current, new, again=None):
        if not driver.find_element(By.ID, "password-dialog").is_displayed():
            driver.find_element(By.ID, "password-button").click()
            wait(driver, EC.visibility_of_element_located((By.ID, "password-current")))
            # Asked for, this one can be dismissed (unlike the first one).
            assert driver.find_element(By.ID, "password-cancel").text == "Cancel"
            assert "other devices will be logged out" in driver.find_element(By.ID, "password-hint").text
        for field, value in [("password-current", current), ("password-new", new), ("password-again", again if again is not None else new)]:
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        driver.find_element(By.ID, "password-save").click()

    # Opened and dismissed: nothing happens, the page stays in.
    driver.find_element(By.ID, "password-button").click()
    wait(driver, EC.visibility_of_element_located((By.ID, "password-current")))
    driver.find_element(By.ID, "password-cancel").click()
    wait(driver, lambda d: not d.find_element(By.ID, "password-dialog").is_displayed())
    assert driver.find_element(By.ID, "app-view").is_displayed()

    # Refusals say why, and change nothing.
    attempt("first-password-1", "second-password-2", again="second-password-3")
    wait(driver, lambda d: d.find_element(By.ID, "password-error").text == "The two new passwords are not the same.")
    attempt("first-password-1", "short")
    wait(driver, lambda d: d.find_element(By.ID, "password-error").text == "The new password needs at least 8 characters.")
    attempt("not-my-password", "second-password-2")
    wait(driver, lambda d: d.find_element(By.ID, "password-error").text == "The current password is wrong.", message="wrong current password")
    assert rest("GET", "/api/me", old_token)["email"] == email

    # The change: the dialog closes, the page stays logged in and online, with a new token.
    attempt("first-password-1", "second-password-2")
    wait(driver, lambda d: not d.find_element(By.ID, "password-dialog").is_displayed(), message="the dialog closes")
    wait(driver, lambda d: "password was changed" in d.find_element(By.ID, "announcer").get_attribute("textContent"))
    wait(driver, lambda d: d.find_element(By.ID, "connection").text == "Online", message="online again with the new token")
    assert driver.find_element(By.ID, "app-view").is_displayed() and not driver.find_element(By.ID, "login-view").is_displayed()
    new_token = driver.execute_script("return JSON.parse(localStorage.getItem('clinic.session')).token")
    assert new_token != old_token
    try:
        rest("GET", "/api/me", old_token)
        raise AssertionError("the old token still works")
    except urllib.error.HTTPError as error:
        assert error.code == 401, error.code
    # Its socket works: a message to it arrives live.
    rest("POST", "/api/messages", admin_token, {"receiver_email": email, "content": "Welcome back", "client_id": f"pw-{uuid.uuid4()}"})
    wait(driver, lambda d: badge(d, "Alex Morgan") == "1", message="a live message after the change")
    time.sleep(1)  # nothing ends the new session late
    assert driver.find_element(By.ID, "app-view").is_displayed()

    # Only the new password logs in.
    driver.find_element(By.ID, "logout-button").click()
    wait(driver, EC.visibility_of_element_located((By.ID, "login-email")))
    try:
        rest("POST", "/api/auth/login", body={"email": email, "password": "first-password-1"})
        raise AssertionError("the old password still logs in")
    except urllib.error.HTTPError as error:
        assert error.code == 401, error.code
    assert rest("POST", "/api/auth/login", body={"email": email, "password": "second-password-2"})["token"]


def test_administration(s):
    doctor = s.new()
    login(doctor, "dr.novak@clinic.com")
    assert not doctor.find_element(By.ID, "admin-button").is_displayed(), "a doctor has no administration"
    admin = s.new()
    login(admin, ADMIN)
    admin.find_element(By.ID, "admin-button").click()
    wait(admin, EC.visibility_of_element_located((By.ID, "user-table")))

    def row(email):
        for tr in admin.find_elements(By.CSS_SELECTOR, "#user-table tbody tr"):
            if tr.get_attribute("data-email") == email:
                return tr
        return None

    def cell(email, name):
        found = row(email)
        return found.find_element(By.CSS_SELECTOR, f".{name}-cell").text if found else None

    def click(email, label, confirm=None):
        for button in row(email).find_elements(By.CSS_SELECTOR, "button"):
            if button.text == label:
                button.click()
                if confirm is not None:
                    alert = WebDriverWait(admin, 5).until(EC.alert_is_present())
                    assert "?" in alert.text, alert.text
                    alert.accept() if confirm else alert.dismiss()
                return
        raise AssertionError(f"no {label} for {email}")

    def message():
        return admin.find_element(By.ID, "admin-message").text

    wait(admin, lambda d: row(DOCTOR) is not None and cell(DOCTOR, "role") == "Doctor", message="the users listed")
    assert row(ADMIN).find_elements(By.CSS_SELECTOR, "button") == [], "no actions on your own account"

    # Add a user with a generated password, shown once; it logs in.
    email = f"new-{uuid.uuid4().hex[:8]}@clinic.com"
    admin.find_element(By.ID, "user-name").send_keys("Dr. Ines Duarte")
    admin.find_element(By.ID, "user-email").send_keys(email)
    admin.find_element(By.ID, "user-add").click()
    wait(admin, lambda d: "Password: " in message(), message="the generated password")
    password = re.search(r"Password: (\S+) \(shown once\)", message()).group(1)
    assert len(password) == 16, password
    wait(admin, lambda d: cell(email, "status") == "Active, password to choose", message="a password to choose at the first login")
    assert rest("POST", "/api/auth/login", body={"email": email, "password": password})["token"]
    # The same email again is refused plainly.
    admin.find_element(By.ID, "user-name").send_keys("Dr. Ines Duarte")
    admin.find_element(By.ID, "user-email").send_keys(email)
    admin.find_element(By.ID, "user-add").click()
    wait(admin, lambda d: d.find_element(By.ID, "admin-error").text == "A user with this email already exists.")

    # Role, disable and enable, a new password.
    click(email, "Make admin")
    wait(admin, lambda d: cell(email, "role") == "Admin", message="made admin")
    # A lock-out asks first: dismissed, nothing changes.
    click(email, "Disable", confirm=False)
    time.sleep(0.5)
    assert cell(email, "status") == "Active, password to choose"
    click(email, "Disable", confirm=True)
    wait(admin, lambda d: cell(email, "status") == "Disabled", message="disabled")
    try:
        rest("POST", "/api/auth/login", body={"email": email, "password": password})
        raise AssertionError("a disabled user logged in")
    except urllib.error.HTTPError as error:
        assert error.code == 401, error.code
    click(email, "Enable")
    wait(admin, lambda d: cell(email, "status") == "Active, password to choose", message="enabled")
    other = s.new()  # the new user's own page, which the admin then logs out
    login(other, email, password, first_password="duarte-own-password")
    click(email, "End sessions", confirm=True)
    wait(admin, lambda d: "was logged out on every device" in message())
    wait(other, EC.visibility_of_element_located((By.ID, "login-email")), message="the user's page back at login")
    assert "session has ended" in other.find_element(By.ID, "login-error").text
    assert cell(email, "status") == "Active", "the user chose their own password"
    click(email, "New password", confirm=True)
    wait(admin, lambda d: "New password for Dr. Ines Duarte: " in message(), message="the new password")
    fresh = re.search(r"New password for Dr\. Ines Duarte: (\S+) \(shown once", message()).group(1)
    assert fresh != password
    wait(admin, lambda d: cell(email, "status") == "Active, password to choose", message="an admin's password is the user's to replace")
    assert rest("POST", "/api/auth/login", body={"email": email, "password": fresh})["token"]

    # The audit log shows what was done, by whom.
    admin.find_element(By.ID, "admin-tab-audit").click()
    def audited(d):
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in d.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")]
        actions = {(r[1], r[2], r[3]) for r in rows if len(r) == 5}
        return all((ADMIN, action, email) in actions for action in
                   ["admin.create_user", "admin.set_user_role", "admin.set_user_disabled", "admin.end_sessions", "admin.set_password"])
    wait(admin, audited, message="the audit log")
    if SHOTS:
        admin.save_screenshot(os.path.join(SHOTS, "administration.png"))
    admin.find_element(By.ID, "admin-close").click()
    wait(admin, lambda d: not d.find_element(By.ID, "admin-dialog").is_displayed())


def test_group_members(s):
    kim, patel, okafor, novak = DOCTOR, PATEL, "dr.okafor@clinic.com", "dr.novak@clinic.com"
    title = f"Ward {uuid.uuid4().hex[:5]}"
    rest("POST", "/api/conversations", token(patel), {"participants": [kim, okafor], "title": title})
    rest("POST", "/api/messages", token(patel), {"conversation_id": next(c["id"] for c in rest("GET", "/api/conversations", token(kim))
                                                                          if c.get("title") == title),
                                               "content": "handover notes", "client_id": uuid.uuid4().hex})

    def members(driver):
        return [li.get_attribute("data-email") for li in driver.find_elements(By.CSS_SELECTOR, "#member-list li")]

    def member_buttons(driver, email):
        for li in driver.find_elements(By.CSS_SELECTOR, "#member-list li"):
            if li.get_attribute("data-email") == email:
                return [b.text for b in li.find_elements(By.CSS_SELECTOR, "button")]
        return None

    # Dr. Novak is not in the group yet; their page learns of it when they are added.
    newcomer = s.new()
    login(newcomer, novak)
    assert conversation_button(newcomer, title) is None

    # Dr. Kim, a member: the members, no Remove (not the creator, not an admin); adds Dr. Novak.
    member = s.new()
    login(member, kim)
    open_conversation(member, title)
    member.find_element(By.ID, "members-button").click()
    wait(member, lambda d: sorted(members(d)) == sorted([kim, okafor, patel]), message="the members")
    assert "created the group" in member.find_element(By.CSS_SELECTOR, f"#member-list li[data-email='{patel}']").text
    assert member_buttons(member, okafor) == [], "only the creator or an admin removes others"
    member.find_element(By.ID, "member-search").send_keys("Novak")
    def add(d):
        for li in d.find_elements(By.CSS_SELECTOR, "#member-candidates li"):
            if li.get_attribute("data-email") == novak:
                li.find_element(By.CSS_SELECTOR, "button").click()
                return True
        return False
    wait(member, add, message="Dr. Novak among the people to add")
    wait(member, lambda d: novak in members(d), message="added")
    assert "was added" in member.find_element(By.ID, "members-message").text
    wait(newcomer, lambda d: conversation_button(d, title) is not None, message="the group in the newcomer's list, live")
    open_conversation(newcomer, title)
    wait(newcomer, lambda d: "handover notes" in texts(d), message="the history, for the newcomer")
    assert badge(newcomer, title) == ""

    # A new title, seen by both.
    renamed = title + " nights"
    field = member.find_element(By.ID, "rename-title")
    field.clear()
    field.send_keys(renamed)
    member.find_element(By.ID, "rename-save").click()
    wait(member, lambda d: d.find_element(By.ID, "pane-title").text == renamed, message="renamed here")
    wait(newcomer, lambda d: d.find_element(By.ID, "pane-title").text == renamed, message="renamed on the other page")
    member.find_element(By.ID, "members-close").click()

    # The creator removes Dr. Okafor (asked first).
    creator = s.new()
    login(creator, patel)
    open_conversation(creator, renamed)
    creator.find_element(By.ID, "members-button").click()
    wait(creator, lambda d: member_buttons(d, okafor) == ["Remove"], message="the creator may remove")
    creator.find_element(By.CSS_SELECTOR, f"#member-list li[data-email='{okafor}'] button").click()
    alert = WebDriverWait(creator, 5).until(EC.alert_is_present())
    assert "no longer see" in alert.text, alert.text
    alert.accept()
    wait(creator, lambda d: okafor not in members(d), message="removed")
    try:
        rest("GET", f"/api/conversations/{next(c['id'] for c in rest('GET', '/api/conversations', token(kim)) if c.get('title') == renamed)}/messages",
             token(okafor))
        raise AssertionError("a removed member still reads the group")
    except urllib.error.HTTPError as error:
        assert error.code == 404, error.code

    # Dr. Novak leaves: the group goes from their page.
    newcomer.find_element(By.ID, "members-button").click()
    wait(newcomer, lambda d: novak in members(d), message="the newcomer's members dialog")
    newcomer.find_element(By.ID, "leave-group").click()
    WebDriverWait(newcomer, 5).until(EC.alert_is_present()).accept()
    wait(newcomer, lambda d: conversation_button(d, renamed) is None, message="gone from the list")
    assert "no longer in" in newcomer.find_element(By.ID, "pane-status").text
    assert newcomer.find_element(By.ID, "composer").get_attribute("hidden") is not None
    wait(creator, lambda d: novak not in members(d), message="the creator's dialog follows")
    if SHOTS:
        creator.save_screenshot(os.path.join(SHOTS, "group-members.png"))


def test_retract(s):
    sender, receiver = s.new(), s.new()
    login(sender, "dr.garcia@clinic.com")
    login(receiver, "dr.okafor@clinic.com")
    tag = uuid.uuid4().hex[:8]
    wrong, right = f"K+ 6.1 for Mr. Wrong {tag}", f"Bed 9 is fine {uuid.uuid4().hex[:4]}"
    rest("POST", "/api/messages", token("dr.okafor@clinic.com"), {"receiver_email": "dr.garcia@clinic.com", "content": "Any news?",
                                                                  "client_id": uuid.uuid4().hex})
    open_conversation(sender, "Dr. Ada Okafor")
    open_conversation(receiver, "Dr. Lucia Garcia")
    send(sender, right)
    send(sender, wrong)
    wait(receiver, lambda d: texts(d)[-2:] == [right, wrong], message="both received")

    def retract_button(driver, text):
        for node in driver.find_elements(By.CSS_SELECTOR, "#messages .message.own"):
            if node.find_element(By.CSS_SELECTOR, ".text").text == text:
                return node.find_element(By.CSS_SELECTOR, ".retract")
        return None

    assert not receiver.find_elements(By.CSS_SELECTOR, "#messages .message:not(.own) .retract"), "only one's own messages"
    wait(sender, lambda d: retract_button(d, wrong) is not None, message="the retract button")
    # Asked first: dismissed, it stays.
    retract_button(sender, wrong).click()
    alert = WebDriverWait(sender, 5).until(EC.alert_is_present())
    assert "removed for everyone" in alert.text, alert.text
    alert.dismiss()
    time.sleep(0.3)
    assert wrong in texts(sender)
    retract_button(sender, wrong).click()
    WebDriverWait(sender, 5).until(EC.alert_is_present()).accept()
    wait(sender, lambda d: wrong not in texts(d) and right in texts(d), message="gone from the sender's page")
    wait(receiver, lambda d: wrong not in texts(d) and right in texts(d), message="gone from the receiver's page, live")
    wait(receiver, lambda d: conversation_button(d, "Dr. Lucia Garcia").find_element(By.CSS_SELECTOR, ".preview").text == right,
         message="the list's preview is the message before it")
    okafor = token("dr.okafor@clinic.com")
    assert rest("GET", f"/api/messages/search?q={urllib.parse.quote(tag)}", okafor) == [], "not found by search"


def test_legal_holds(s):
    okafor, novak = "dr.okafor@clinic.com", "dr.novak@clinic.com"
    title = f"Case review {uuid.uuid4().hex[:6]}"
    secret = f"biopsy result {uuid.uuid4().hex[:6]}"
    group = rest("POST", "/api/conversations", token(okafor), {"participants": [novak], "title": title})
    rest("POST", "/api/messages", token(okafor), {"conversation_id": group["id"], "content": secret, "client_id": uuid.uuid4().hex})

    admin = s.new()
    login(admin, ADMIN)
    admin.find_element(By.ID, "admin-button").click()
    admin.find_element(By.ID, "admin-tab-holds").click()
    wait(admin, lambda d: d.find_element(By.ID, "hold-caption").text.startswith("On legal hold: "), message="the held conversations")

    def row():
        for tr in admin.find_elements(By.CSS_SELECTOR, "#hold-table tbody tr"):
            if tr.get_attribute("data-id") == group["id"]:
                return tr
        return None

    def cell(name):
        found = row()
        return found.find_element(By.CSS_SELECTOR, f".{name}-cell").text if found else None

    def press(label):
        for button in row().find_elements(By.CSS_SELECTOR, "button"):
            if button.text == label:
                return button.click()
        raise AssertionError(f"no {label}")

    # A participant's conversations: who takes part and how much is stored, never what was said.
    admin.find_element(By.ID, "hold-participant").send_keys(okafor)
    admin.find_element(By.ID, "hold-find").click()
    wait(admin, lambda d: d.find_element(By.ID, "hold-caption").text.startswith("Conversations of Dr. "), message="the participant's conversations")
    wait(admin, lambda d: cell("hold") == "No", message="the group listed, not held")
    assert title in row().text and novak in cell("participants") and okafor in cell("participants"), row().text
    assert cell("messages") == "1 stored", cell("messages")
    assert secret not in admin.find_element(By.ID, "admin-dialog").text, "no content in the admin's lists"

    press("Place hold")
    wait(admin, lambda d: cell("hold") == "On hold", message="held")
    assert "legal hold" in admin.find_element(By.ID, "admin-message").text
    if SHOTS:
        admin.save_screenshot(os.path.join(SHOTS, "legal-holds.png"))
    admin.find_element(By.ID, "hold-show-held").click()
    wait(admin, lambda d: d.find_element(By.ID, "hold-caption").text.startswith("On legal hold: ") and row() is not None, message="in the held list")
    # Releasing asks first (what is past retention goes at the next sweep): dismissed, it stays held.
    press("Release")
    alert = WebDriverWait(admin, 5).until(EC.alert_is_present())
    assert "deleted at the next sweep" in alert.text, alert.text
    alert.dismiss()
    time.sleep(0.5)
    assert cell("hold") == "On hold"
    press("Release")
    WebDriverWait(admin, 5).until(EC.alert_is_present()).accept()
    wait(admin, lambda d: row() is None, message="gone from the held list")
    assert "released" in admin.find_element(By.ID, "admin-message").text

    # An unknown person is said plainly.
    admin.find_element(By.ID, "hold-participant").send_keys("ghost@clinic.com")
    admin.find_element(By.ID, "hold-find").click()
    wait(admin, lambda d: d.find_element(By.ID, "admin-error").text == "No user has the email ghost@clinic.com.", message="unknown participant")

    # The audit log has the hold, its release and the lookups.
    admin.find_element(By.ID, "admin-tab-audit").click()
    def audited(d):
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in d.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")]
        seen = {(r[1], r[2], r[3]) for r in rows if len(r) == 5}
        return {(ADMIN, "admin.set_legal_hold", group["id"]), (ADMIN, "admin.list_conversations", okafor),
                (ADMIN, "admin.list_conversations", "legal_hold")} <= seen
    wait(admin, audited, message="the audit log")


def test_logout_everywhere(s):
    # Two browsers of one user: logging out everywhere in one brings both back to the login page.
    first, second = s.new(), s.new()
    login(first, PATEL)
    login(second, PATEL)
    kept = token(ADMIN)
    first.find_element(By.ID, "logout-everywhere-button").click()
    WebDriverWait(first, 5).until(EC.alert_is_present()).dismiss()  # it asks first; dismissed, nothing happens
    time.sleep(0.5)
    assert first.find_element(By.ID, "app-view").is_displayed()
    first.find_element(By.ID, "logout-everywhere-button").click()
    WebDriverWait(first, 5).until(EC.alert_is_present()).accept()
    wait(first, EC.visibility_of_element_located((By.ID, "login-email")), message="this page logged out")
    assert "logged out on every device" in first.find_element(By.ID, "login-error").text
    wait(second, EC.visibility_of_element_located((By.ID, "login-email")), message="the other page logged out")
    assert "session has ended" in second.find_element(By.ID, "login-error").text
    assert rest("GET", "/api/me", kept)["email"] == ADMIN, "nobody else's session ends"
    login(second, PATEL)  # and the user logs in again as usual


def test_idle_logout(s):
    driver = s.new()
    login(driver, "dr.novak@clinic.com")
    driver.execute_script("document.body.dataset.idleMinutes = '0.03'")  # about 2 s
    driver.find_element(By.ID, "search-input").send_keys("x")
    wait(driver, EC.visibility_of_element_located((By.ID, "login-email")), timeout=15, message="logged out when idle")
    assert "inactivity" in driver.find_element(By.ID, "login-error").text


def test_zz_throttling_message(s):
    # Last: five failures from this address throttle every login from it for a minute.
    driver = s.new()
    driver.get(BASE + "/")
    wait(driver, EC.visibility_of_element_located((By.ID, "login-email")))
    driver.find_element(By.ID, "login-email").send_keys("dr.garcia@clinic.com")
    for _ in range(7):
        field = driver.find_element(By.ID, "login-password")
        field.clear()
        field.send_keys("not the password")
        driver.find_element(By.ID, "login-submit").click()
        time.sleep(0.3)
        if "Too many attempts" in driver.find_element(By.ID, "login-error").text:
            break
    wait(driver, lambda d: "Too many attempts. Try again in" in d.find_element(By.ID, "login-error").text)


def main():
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
    # ONLY=<part of a name> runs the tests whose names contain it.
    tests = [value for name, value in globals().items() if name.startswith("test_") and os.environ.get("ONLY", "") in name]
    failed = 0
    for test in tests:
        session = Session()
        try:
            test(session)
            session.close()
            print(f"  ok    {test.__name__}")
        except (Exception, TimeoutException):
            failed += 1
            print(f"  FAIL  {test.__name__}")
            traceback.print_exc()
            session.close(failed_name=test.__name__)
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
