"""The agent console, ``/agent/{tenant}``, in headless Chromium on a real ``parlour serve``: a
user on the chat page asks for a person; an agent in another window sees the ticket, follows
the user's messages live, takes it, replies (the chat page shows it), and resumes the flow with
a variable. Both consoles must stay clean: a CSP violation or a JavaScript error fails the test."""

from __future__ import annotations

import json
import re

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from parlour.config import hash_token, new_token

from .conftest import ServeProcess
from .test_chat_page import ChatPage, require_chromium, start_chromium

TOKEN = new_token()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_chromium()
    folder = tmp_path_factory.mktemp("agent-page")
    (folder / "parlour.yaml").write_text(
        f"tenants:\n  demo: {{user_rate_limit: null, tokens: ['{hash_token(TOKEN)}']}}\n")
    serving = ServeProcess(folder, "--config", str(folder / "parlour.yaml")).start()
    yield serving
    if serving.process.poll() is None:
        serving.stop()


class AgentPage:
    def __init__(self, chat: ChatPage):
        self.chat, self.driver = chat, chat.driver

    def find(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def texts(self, selector: str) -> list[str]:
        return [node.text for node in self.driver.find_elements(By.CSS_SELECTOR, selector)]

    def wait_text(self, selector: str, text: str) -> None:
        self.chat.wait(f"{text!r} in {selector}", lambda: any(text in shown for shown in self.texts(selector)))


def chat_texts(chat: ChatPage) -> list[str]:
    return [text for who, text, _ in chat.transcript() if who == "bot"]


def wait_bot(chat: ChatPage, text: str) -> None:
    chat.wait(f"the bot to say {text!r}", lambda: any(text in said for said in chat_texts(chat)))


def test_an_agent_sees_a_ticket_replies_and_resumes_the_flow(server, tmp_path):
    driver = start_chromium(tmp_path)
    try:
        user = ChatPage(driver, server.url, tmp_path)
        user.open()
        user.wait_status("connected")
        user.say("help")
        wait_bot(user, "What can I help you with?")
        user.say("agent")
        wait_bot(user, "passing you to a colleague")
        user_window = driver.current_window_handle

        driver.switch_to.new_window("window")
        agent = AgentPage(ChatPage(driver, server.url, tmp_path))
        driver.get(f"{server.url}/agent/demo")
        assert driver.title == "demo · hand-offs"
        agent.find("agent").send_keys("kim")
        agent.find("token").send_keys(TOKEN, Keys.ENTER)
        agent.wait_text("#tickets .ticket-link", "support · open")
        assert driver.execute_script("return sessionStorage.getItem('parlour:agent:token')") == TOKEN
        kept = driver.execute_script("return Object.keys(localStorage).map((k) => localStorage.getItem(k)).join(' ')")
        assert TOKEN not in kept  # the token is this tab's only (the chat page's own keys are there)
        driver.find_elements(By.CSS_SELECTOR, "#tickets .ticket-link")[-1].click()
        agent.wait_text("#ticket-facts", "Customer asked for a person")
        agent.wait_text("#transcript .msg.user", "agent")
        agent.chat.wait("the live stream", lambda: agent.find("stream").get_attribute("data-state") == "live")

        driver.switch_to.window(user_window)
        user.say("my card is blocked")
        driver.switch_to.window(agent.driver.window_handles[-1])
        agent.wait_text("#transcript .msg.user", "my card is blocked")  # live, through the event stream

        agent.find("assign").click()
        agent.wait_text("#ticket-title", "assigned (kim)")
        agent.find("reply-text").send_keys("Hello, I'm Kim. Let me look.", Keys.ENTER)
        agent.wait_text("#transcript .msg.agent", "Hello, I'm Kim. Let me look.")
        assert agent.find("reply-text").get_attribute("value") == ""

        agent.find("resume-vars").send_keys("[1, 2]")
        agent.find("resume-go").click()
        agent.wait_text("#notice", "The variables are a JSON object")
        agent.find("resume-vars").clear()
        agent.find("resume-vars").send_keys(json.dumps({"handoff_reason": "solved by kim"}))
        agent.find("resume-go").click()
        agent.wait_text("#ticket-title", "closed (kim)")
        agent.wait_text("#ticket-facts", "closed (resumed)")
        assert agent.find("reply-text").get_attribute("disabled") == "true"
        agent_problems = agent.chat.console_problems()

        driver.switch_to.window(user_window)
        wait_bot(user, "Hello, I'm Kim. Let me look.")  # pushed to the user's chat socket
        wait_bot(user, "You're back with the Acme bot.")
        assert agent_problems == [] and user.console_problems() == []
    finally:
        driver.quit()


def test_the_console_of_an_unknown_tenant_is_404_and_a_wrong_token_says_so(server, tmp_path):
    driver = start_chromium(tmp_path)
    try:
        page = AgentPage(ChatPage(driver, server.url, tmp_path))
        driver.get(f"{server.url}/agent/nobody")
        assert "not_found" in driver.page_source
        driver.get(f"{server.url}/agent/demo")
        page.find("token").send_keys("plr_wrong", Keys.ENTER)
        page.wait_text("#notice", "The queue:")
        assert "error" in page.find("notice").get_attribute("class")
        refused = re.compile(r"Failed to load resource: the server responded with a status of (401|404)")
        assert page.chat.console_problems(allowed=refused) == []  # the refused page and fetch only
    finally:
        driver.quit()
