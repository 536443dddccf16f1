"""The chat page, ``/chat/{tenant}``, in headless Chromium on a real ``parlour serve``: a whole
registration with the bundled demo flow, a reload that continues the conversation, and a
server restart the page rides out. The browser's console must stay clean: a CSP violation or a
JavaScript error fails the test.

The browser is Debian's Chromium and its driver (``apt-get install chromium chromium-driver``);
without them these tests fail, as CI must.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import ServeProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHONE = "400,800"  # the window, in CSS pixels: the page must work at a phone's width

WELCOME = ("Hi there! Welcome to the club.", "What would you like to do?")
MENU = ["Register", "About us", "Quit"]

# The transcript as the page shows it: (who, text, and for the user's: "pending" until answered,
# "failed" if refused, else "")
READ_LOG = """
return Array.from(document.querySelectorAll('#log > *'), (node) => [
  node.classList.contains('user') ? 'user' : node.classList.contains('bot') ? 'bot' : 'note',
  (node.querySelector('.text') || node).textContent,
  ['pending', 'failed'].find((state) => node.classList.contains(state)) || '',
]);
"""


LATER = """
flow: later
triggers: [{keyword: [timer]}, {default: true}]
start: first
nodes:
  first: {say: waiting, wait: 3s, next: later}
  later: {say: fired, end: true}
"""
"""The tenant ``later``'s flow: it speaks again 3 s after ``timer`` (time for a page to close)."""


class ChatPage:
    """The page as a person uses it: types, presses Enter, clicks buttons; and reads what
    the page shows. Every wait is explicit; a wait that runs out fails with the transcript and
    a screenshot (under the test's tmp_path)."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, evidence: Path):
        self.driver, self.base_url, self.evidence = driver, base_url, evidence
        self.mark = 0  # where in the transcript the last message sent starts
        self.sent = ""  # what it shows as
        self.shots = 0

    def open(self, tenant: str = "demo") -> None:
        self.driver.get(f"{self.base_url}/chat/{tenant}")
        self.mark = 0

    def close_tab(self) -> None:
        """Close the page's tab (its socket with it), and go on in a new, empty one."""
        closing = self.driver.current_window_handle
        self.driver.switch_to.new_window("tab")
        opened = self.driver.current_window_handle
        self.driver.switch_to.window(closing)
        self.driver.close()
        self.driver.switch_to.window(opened)

    def reload(self) -> None:
        self.driver.refresh()
        self.mark = len(self.transcript())

    def wait(self, what: str, condition, timeout_s: float = 20.0):
        try:
            return WebDriverWait(self.driver, timeout_s, poll_frequency=0.05).until(lambda _: condition())
        except TimeoutException:
            raise AssertionError(f"waited {timeout_s} s for {what}; the page shows:\n{self.describe()}") from None

    def describe(self) -> str:
        self.shots += 1
        shot = self.evidence / f"page-{self.shots}.png"
        self.driver.save_screenshot(str(shot))
        lines = [f"  {who}: {text}{f' ({state})' if state else ''}" for who, text, state in self.transcript()]
        return "\n".join([f"  [status: {self.status()}]", *lines, f"(screenshot: {shot})"])

    # -- reading

    def transcript(self) -> list[tuple[str, str, str]]:
        return [tuple(row) for row in self.driver.execute_script(READ_LOG)]

    def status(self) -> str:
        return self.driver.find_element(By.ID, "status").get_attribute("data-state")

    def wait_status(self, state: str, timeout_s: float = 20.0) -> None:
        self.wait(f"the status {state!r}", lambda: self.status() == state, timeout_s)

    def buttons(self) -> list[str]:
        """The titles of the buttons under the last message."""
        last = self.driver.find_elements(By.CSS_SELECTOR, "#log > .msg:last-child .choice-title")
        return [button.text for button in last]

    def pressable(self) -> list[str]:
        """The titles of the buttons that can be pressed, anywhere in the transcript."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#log button.choice:not(:disabled)'),"
            " (b) => b.querySelector('.choice-title').textContent);")

    def user_id(self) -> str:
        return self.driver.execute_script("return JSON.parse(localStorage.getItem('parlour:demo:user'))")

    def focused(self) -> str | None:
        return self.driver.switch_to.active_element.get_attribute("id")

    # -- acting

    def say(self, text: str) -> None:
        self.mark, self.sent = len(self.transcript()), text
        self.driver.find_element(By.ID, "text").send_keys(text, Keys.ENTER)

    def press(self, title: str, which: int = -1) -> None:
        """Click the button ``title`` of the last message that has one (``which``: of another)."""
        self.mark, self.sent = len(self.transcript()), title
        found = self.driver.find_elements(
            By.XPATH, f"//div[@id='log']//button[contains(@class, 'choice')][span[@class='choice-title'][.='{title}']]")
        assert found, f"no button {title!r}; the page shows:\n{self.describe()}"
        found[which].click()

    def expect(self, *replies: str | re.Pattern, timeout_s: float = 20.0) -> None:
        """The last message sent shows as the user's and is answered, and the bot says exactly
        ``replies`` after it (a pattern matches a part of its reply). A pushed reply may come
        before the answer, which is why both are waited for."""
        def arrived():
            after = self.transcript()[self.mark:]
            answered = not any(state == "pending" for _, _, state in after)
            return after if answered and len([row for row in after if row[0] != "user"]) >= len(replies) else None

        after = self.wait(f"the replies {replies}", arrived, timeout_s)
        assert after[0] == ("user", self.sent, ""), self.describe()
        answers = [(who, text) for who, text, _ in after[1:]]
        assert len(answers) == len(replies), f"expected {replies}, got {answers}"
        for (who, text), expected in zip(answers, replies, strict=True):
            matches = expected.search(text) if isinstance(expected, re.Pattern) else text == expected
            assert who == "bot" and matches, f"expected {replies}, got {answers}"

    def console_problems(self, allowed: re.Pattern | None = None) -> list[str]:
        """What the browser logged that a clean page would not: errors, CSP reports."""
        return [entry["message"] for entry in self.driver.get_log("browser")
                if (entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"])
                and not (allowed and allowed.search(entry["message"]))]


def require_chromium() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(f"the chat page tests need Debian's Chromium and its driver; missing: {', '.join(missing)} "
                    "(apt-get install chromium chromium-driver)")


def start_chromium(folder: Path) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile in ``folder`` (so a new user), at a phone's width,
    keeping the console's messages for :meth:`ChatPage.console_problems`."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={PHONE}",
                     f"--user-data-dir={folder / 'profile'}", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), log_output=str(folder / "chromedriver.log"))
    try:
        return webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        pytest.fail(f"headless Chromium did not start: {exc.msg} (see {folder / 'chromedriver.log'})")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_chromium()  # before the server's start, which takes a while
    folder = tmp_path_factory.mktemp("chat-page")
    (folder / "later").mkdir()
    (folder / "later" / "later.yaml").write_text(LATER)
    # A script types faster than a person: no per-user rate for it (tests/gateway/test_hardening.py tests that rate).
    (folder / "parlour.yaml").write_text("tenants:\n  demo: {user_rate_limit: null}\n"
                                         f"  later: {{user_rate_limit: null, flows: [{folder / 'later'}]}}\n")
    serving = ServeProcess(folder, "--config", str(folder / "parlour.yaml")).start()
    yield serving
    if serving.process.poll() is None:
        serving.stop()


@pytest.fixture
def chat(server, tmp_path):
    driver = start_chromium(tmp_path)
    try:
        yield ChatPage(driver, server.url, tmp_path)
    finally:
        driver.save_screenshot(str(tmp_path / "last.png"))
        driver.quit()


def test_a_registration_from_hi_to_the_end(chat):
    chat.open()
    chat.wait_status("connected")
    assert chat.driver.title == "demo · chat"
    assert chat.driver.find_element(By.ID, "log").get_attribute("aria-live") == "polite"
    assert chat.driver.find_element(By.CSS_SELECTOR, "label[for=text]").get_attribute("textContent")
    assert chat.focused() == "text"

    chat.say("hi")
    chat.expect(*WELCOME)
    assert chat.buttons() == MENU
    chat.press("Register")
    chat.expect("What's your full name?")
    assert chat.transcript()[-2] == ("user", "Register", "")  # the title shows as what the user said
    assert chat.focused() == "text"
    chat.say("R2D2!")
    chat.expect("Letters only, please.")
    chat.say("Ada Lovelace")
    chat.expect("Thanks Ada Lovelace. What's your email?")
    chat.say("ada@example")
    chat.expect("That doesn't look like an email address.")
    chat.say("ada@example.org")  # still the email it waits for: a good one moves on
    chat.expect("How old are you?")
    chat.say("236")
    chat.expect(re.compile("at most 120"))
    chat.say("36")
    chat.expect("Register Ada Lovelace <ada@example.org>, 36?")
    assert chat.buttons() == ["Yes", "Start over"]
    chat.press("Yes")
    # The answer to "Yes" is empty: the members API call runs after the turn, and its outcome
    # is pushed. `parlour serve` gives flows no env.MEMBERS_API, so the call fails.
    chat.expect("Our system is busy, please try again later.", "Bye for now. Type hi to start again.")
    assert chat.focused() == "text"

    # A message the server refuses (the box's maxlength keeps a person from typing it) shows
    # the error, and the conversation goes on.
    chat.driver.execute_script("document.getElementById('text').value = 'x'.repeat(5000)")
    chat.say("")
    chat.wait("the error", lambda: chat.transcript()[-1][0] == "note")
    (_, refused, state), (_, error, _) = chat.transcript()[-2:]
    assert (len(refused), state) == (5000, "failed") and "at most 4096 characters" in error
    chat.say("hi")
    chat.expect(*WELCOME)
    assert chat.console_problems() == []


def test_a_reload_continues_the_conversation(chat):
    chat.open()
    chat.say("hi")  # before the socket is open, maybe: the page sends it once it is
    chat.expect(*WELCOME)
    chat.press("Register")
    chat.expect("What's your full name?")
    user, shown = chat.user_id(), chat.transcript()

    chat.reload()
    chat.wait_status("connected")
    assert chat.user_id() == user
    assert chat.transcript() == shown
    chat.say("Ada Lovelace")  # the flow still waits for the name: a new user would be welcomed
    chat.expect("Thanks Ada Lovelace. What's your email?")
    chat.say("stop")
    chat.expect("Bye for now. Type hi to start again.")
    chat.say("hi")  # an ended conversation starts again
    chat.expect(*WELCOME)

    chat.driver.find_element(By.ID, "restart").click()
    chat.wait("an empty conversation", lambda: chat.transcript() == [])
    assert chat.user_id() != user
    chat.wait_status("connected")
    assert chat.focused() == "text"
    chat.say("Ada Lovelace")  # a new user: the flow's default trigger welcomes them
    chat.expect(*WELCOME)
    assert chat.console_problems() == []


def test_an_answered_questions_buttons_are_disabled_and_the_flow_refuses_an_old_press(chat):
    chat.open()
    chat.say("hi")
    chat.expect(*WELCOME)
    assert chat.pressable() == MENU
    chat.say("nothing")  # refused: the menu's buttons come again, and only those can be pressed
    chat.expect("Please pick one of the options.")
    assert chat.pressable() == MENU and len(chat.driver.find_elements(By.CSS_SELECTOR, "#log button.choice")) == 6
    chat.press("Register")
    chat.expect("What's your full name?")
    assert chat.pressable() == []
    # The issue-13 case: the old menu's Quit pressed after Register (a page from before the
    # buttons were disabled, another tab). The page sends its prompt, and the flow refuses it.
    chat.driver.execute_script("for (const b of document.querySelectorAll('#log button.choice')) b.disabled = false;")
    chat.press("Quit")
    chat.expect("Letters only, please.")
    assert chat.pressable() == []

    chat.reload()
    chat.wait_status("connected")
    assert chat.pressable() == []  # settled again from the saved transcript
    chat.say("menu")
    chat.expect("What would you like to do?")
    assert chat.pressable() == MENU  # the new menu's only
    # The first menu's Quit at the new menu: the page says which prompt it belongs to (a
    # press without one would be taken by the menu it names an option of).
    chat.driver.execute_script("for (const b of document.querySelectorAll('#log button.choice')) b.disabled = false;")
    chat.press("Quit", which=0)
    chat.expect("Please pick one of the options.")
    assert chat.pressable() == MENU
    chat.reload()
    chat.wait_status("connected")
    assert chat.pressable() == MENU
    chat.press("Quit")
    chat.expect("Bye for now. Type hi to start again.")
    assert chat.pressable() == []
    assert chat.console_problems() == []


def test_the_page_rides_out_a_server_restart(chat, server):
    chat.open()
    chat.say("hi")
    chat.expect(*WELCOME)
    chat.press("Register")
    chat.expect("What's your full name?")
    try:
        assert server.stop() == 0
        chat.wait_status("offline")
        chat.say("Ada Lovelace")  # queued: sent when the server is back
        chat.wait("the message waiting", lambda: chat.transcript()[-1] == ("user", "Ada Lovelace", "pending"))
        assert "1 waiting" in chat.driver.find_element(By.ID, "status").text
        server.start()
        chat.expect("Thanks Ada Lovelace. What's your email?", timeout_s=60)
        chat.wait_status("connected")
    finally:
        if server.process.poll() is not None:
            server.start()
    # The reconnection attempts while the server was down are the only thing logged.
    assert chat.console_problems(allowed=re.compile(r"WebSocket connection to 'ws://[^']+/v1/demo/web/ws\?user=\w+' "
                                                    r"failed")) == []


def _mailbox(server, tenant: str, user: str, wait_s: float = 0) -> list[str]:
    """The texts in ``user``'s mailbox, read (not acknowledged) over HTTP."""
    query = urllib.parse.urlencode({"user": user, "wait_s": wait_s})
    with urllib.request.urlopen(f"{server.url}/v1/{tenant}/web/messages?{query}", timeout=wait_s + 10) as response:
        return [reply["text"] for reply in json.load(response)["replies"]]


def _wait_for(condition, timeout_s: float = 20.0) -> bool:
    """``condition()`` became true within ``timeout_s`` (checked every 50 ms), for waits without a page."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pushes(server) -> str:
    request = urllib.request.Request(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return "\n".join(line for line in response.read().decode().splitlines() if "pushed" in line)


def _no_socket_pushes(server) -> float:
    """Pushes that found no socket, summed over the node servers (each counts its own)."""
    request = urllib.request.Request(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        found = re.findall(r'^parlour_web_pushed_total\{[^}]*result="no_socket"[^}]*\} (\S+)$',
                           response.read().decode(), re.M)
    return sum(map(float, found))


def test_a_page_closed_during_a_timer_shows_its_message_when_opened_again(chat, server):
    chat.open("later")
    chat.say("timer")
    chat.expect("waiting")
    chat.wait("the timer's message, pushed", lambda: chat.transcript()[-1] == ("bot", "fired", ""))
    user = chat.driver.execute_script("return JSON.parse(localStorage.getItem('parlour:later:user'))")
    chat.wait("the pushed message acknowledged", lambda: _mailbox(server, "later", user) == [])
    assert [text for _, text, _ in chat.transcript()] == ["timer", "waiting", "fired"]  # pushed and read: shown once

    missed = _no_socket_pushes(server)
    chat.say("timer")
    chat.expect("waiting")
    chat.close_tab()  # the page is closed before the timer fires (a page navigated away may live on in the cache)
    assert _mailbox(server, "later", user, wait_s=20) == ["fired"]
    assert _wait_for(lambda: _no_socket_pushes(server) > missed), _pushes(server)  # it fired while no page listened

    chat.open("later")
    chat.wait("the message it missed", lambda: len(chat.transcript()) == 6)
    assert [text for _, text, _ in chat.transcript()] == ["timer", "waiting", "fired"] * 2
    chat.wait("the missed message acknowledged", lambda: _mailbox(server, "later", user) == [])
    assert chat.console_problems() == []
