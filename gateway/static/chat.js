/* The web chat of one tenant, served at /chat/<tenant>.
 *
 * It talks to /v1/<tenant>/web/ws?user=<id> (gateway/web.py): it sends {"id", "text"} or
 * {"id", "button"}, the server answers each in order, and pushes what a timer makes the flow
 * say later; on each (re)connection it reads what it missed from the user's mailbox
 * (mailbox.js, loaded before this file). Messages go one at a time through an outbox: the head is sent, and leaves the
 * outbox only when its answer comes. A message sent while offline, or whose answer a closed
 * socket lost, is sent again with the same id once the socket is back (the server
 * deduplicates by id and answers with the replies of the first time).
 *
 * The user id, the outbox and the transcript live in localStorage, so that a reload continues
 * the conversation. No framework, no build step; the CSP allows no inline script or style.
 */
"use strict";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 8000;
const ANSWER_TIMEOUT_MS = 45000;  // past the server's request timeout: the socket is half dead
const RETRYABLE = new Set(["unavailable", "rate_limited", "timeout"]);
const MAX_REFUSALS = 5;  // a message the server is too busy to take is tried this many times
const TRANSCRIPT_MAX = 200;

const ui = {
  title: document.getElementById("title"),
  status: document.getElementById("status"),
  restart: document.getElementById("restart"),
  log: document.getElementById("log"),
  form: document.getElementById("composer"),
  input: document.getElementById("text"),
};

// ------------------------------------------------------------------ ids and storage

function tenantOf(path) {
  const match = /^\/chat\/([^/]+)\/?$/.exec(path);
  return match ? decodeURIComponent(match[1]) : null;
}

/* 128 random bits as hex. crypto.randomUUID needs a secure context; this page may be on plain
 * http on a LAN, where getRandomValues still works. */
function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/* localStorage under the tenant's prefix; if the browser refuses it (disabled, full), the
 * values live as long as the page. */
function Saved(prefix) {
  const memory = new Map();
  const key = (name) => `parlour:${prefix}:${name}`;
  return {
    get(name, fallback) {
      try {
        const raw = localStorage.getItem(key(name));
        return raw === null ? fallback : JSON.parse(raw);
      } catch (error) {
        return memory.has(name) ? memory.get(name) : fallback;
      }
    },
    set(name, value) {
      memory.set(name, value);
      try {
        localStorage.setItem(key(name), JSON.stringify(value));
      } catch (error) { /* kept in memory */ }
    },
  };
}

// ------------------------------------------------------------------ rendering

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function speaker(label) {
  return el("span", "sr-only", label + ": ");
}

/* Only http(s) links and images: a flow's URL must not become javascript: in a page. */
function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch (error) {
    return null;
  }
}

function mediaNode(media) {
  const url = safeUrl(media.url);
  if (url === null) return el("p", "media", media.filename || "(an attachment with an unusable address)");
  if (media.kind === "image") {
    const image = el("img", "media");
    image.src = url;
    image.alt = media.filename || "an image";
    image.loading = "lazy";
    return image;
  }
  const link = el("a", "media file", media.filename || (media.kind ? `Open the ${media.kind}` : "Open the file"));
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  return link;
}

function choiceButton(choice, onChoose) {
  const button = el("button", "choice");
  button.type = "button";
  button.dataset.id = choice.id;
  button.append(el("span", "choice-title", choice.title));
  if (choice.description) button.append(el("span", "choice-description", choice.description));
  button.addEventListener("click", () => onChoose(choice));
  return button;
}

function choicesNode(choices, className, label, onChoose) {
  const group = el("div", className);
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", label);
  for (const choice of choices) group.append(choiceButton(choice, onChoose));
  return group;
}

function botNode(reply, onChoose) {
  const node = el("div", "msg bot");
  if (reply.text) node.append(el("p", "text", reply.text));
  if (reply.media) node.append(mediaNode(reply.media));
  if (reply.buttons && reply.buttons.length) {
    node.append(choicesNode(reply.buttons, "choices", "Options", onChoose));
  }
  if (reply.list && reply.list.items.length) {
    if (reply.list.button) node.append(el("p", "list-heading", reply.list.button));
    node.append(choicesNode(reply.list.items, "choices list", reply.list.button || "Choices", onChoose));
  }
  node.prepend(speaker("Bot"));
  return node;
}

function userNode(entry) {
  const node = el("div", "msg user");
  node.append(speaker("You"), el("p", "text", entry.text));
  node.dataset.id = entry.id;
  if (entry.failed) node.classList.add("failed");
  return node;
}

function noteNode(entry) {
  const node = el("p", entry.error ? "note error" : "note", entry.text);
  return node;
}

// ------------------------------------------------------------------ the chat

function Chat(tenant) {
  const saved = Saved(tenant);
  let user = saved.get("user", null);
  let outbox = saved.get("outbox", []);
  let transcript = saved.get("transcript", []);
  let socket = null;
  let attempts = 0;
  let inFlight = null;
  let retryTimer = 0;   // the next connection attempt
  let resendTimer = 0;  // the next try of a message the server could not take then
  let answerTimer = 0;
  let state = "connecting";

  if (typeof user !== "string" || !user) {
    user = randomId();
    saved.set("user", user);
  }
  const mailbox = Mailbox(`/v1/${encodeURIComponent(tenant)}/web/messages`, saved, showReplies);

  // -- the transcript

  function show(entry, remember = true) {
    const node = entry.from === "bot" ? botNode(entry.reply, choose)
      : entry.from === "user" ? userNode(entry) : noteNode(entry);
    if (entry.from === "user" && outbox.some((m) => m.id === entry.id)) node.classList.add("pending");
    ui.log.append(node);
    ui.log.scrollTop = ui.log.scrollHeight;
    if (remember) {
      transcript.push(entry);
      transcript = transcript.slice(-TRANSCRIPT_MAX);
      saved.set("transcript", transcript);
    }
  }

  function showReplies(replies) {
    for (const reply of replies) show({ from: "bot", reply });
  }

  function delivered(id, ok) {
    const node = ui.log.querySelector(`.msg.user.pending[data-id="${CSS.escape(id)}"]`);
    if (node) node.classList.remove("pending");
    if (ok) return;
    if (node) node.classList.add("failed");
    const entry = transcript.find((e) => e.id === id);
    if (entry) entry.failed = true;
    saved.set("transcript", transcript);
  }

  // -- status

  function setStatus(next) {
    state = next;
    const waiting = outbox.length ? ` (${outbox.length} waiting)` : "";
    const text = { connecting: "Connecting…", connected: "Connected", offline: "Offline, reconnecting…" }[next];
    ui.status.dataset.state = next;
    ui.status.textContent = text + (next === "connected" ? "" : waiting);
  }

  // -- sending

  function send(body, shown) {
    const message = { id: randomId(), body, refusals: 0 };
    message.body.id = message.id;
    outbox.push(message);
    saved.set("outbox", outbox);
    show({ from: "user", id: message.id, text: shown });
    setStatus(state);
    pump();
  }

  function choose(choice) {
    send({ button: choice.id }, choice.title);
    ui.input.focus();
  }

  function pump() {
    if (inFlight || !outbox.length || !socket || socket.readyState !== WebSocket.OPEN) return;
    inFlight = outbox[0];
    socket.send(JSON.stringify(inFlight.body));
    answerTimer = setTimeout(() => socket && socket.close(4000, "no answer"), ANSWER_TIMEOUT_MS);
  }

  function answered(frame) {
    clearTimeout(answerTimer);
    const message = inFlight;
    inFlight = null;
    if (frame.type === "error" && RETRYABLE.has(frame.error.code) && message.refusals < MAX_REFUSALS) {
      message.refusals += 1;
      resendTimer = setTimeout(pump, backoff(message.refusals));
      return;
    }
    outbox.shift();
    saved.set("outbox", outbox);
    delivered(message.id, frame.type !== "error");
    if (frame.type === "error") show({ from: "note", error: true, text: `Error: ${frame.error.message}` });
    else showReplies(frame.replies);
    setStatus(state);
    pump();
  }

  function receive(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (frame.type === "push") mailbox.pushed(frame.replies);
    // The server answers in order and one message is in flight: an answer without an id (a
    // frame it could not read) is that message's too.
    else if (inFlight && (frame.id === inFlight.id || frame.id === null)) answered(frame);
  }

  // -- the socket

  function backoff(attempt) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    return ceiling / 2 + Math.random() * ceiling / 2;
  }

  function url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/v1/${encodeURIComponent(tenant)}/web/ws?user=${encodeURIComponent(user)}`;
  }

  function connect() {
    clearTimeout(retryTimer);
    setStatus("connecting");
    const opened = new WebSocket(url());
    opened.addEventListener("open", () => {
      if (socket !== opened) return;
      attempts = 0;
      setStatus("connected");
      mailbox.connected(user);
      pump();
    });
    opened.addEventListener("message", (event) => {
      if (socket === opened) receive(event);
    });
    opened.addEventListener("close", () => closed(opened));
    socket = opened;
  }

  function closed(which) {
    if (socket !== which) return;  // a socket this page let go of already
    socket = null;
    inFlight = null;
    clearTimeout(answerTimer);
    setStatus("offline");
    retryTimer = setTimeout(connect, backoff(attempts));
    attempts += 1;
  }

  function reconnectNow() {
    if (socket === null) connect();
  }

  function restart() {
    const old = socket;
    socket = null;
    if (old) old.close(1000, "new chat");
    clearTimeout(retryTimer);
    clearTimeout(resendTimer);
    clearTimeout(answerTimer);
    inFlight = null;
    mailbox.forget();
    user = randomId();
    outbox = [];
    transcript = [];
    saved.set("user", user);
    saved.set("outbox", outbox);
    saved.set("transcript", transcript);
    ui.log.replaceChildren();
    connect();
    ui.input.focus();
  }

  function start() {
    for (const entry of transcript) show(entry, false);
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = ui.input.value.trim();
      if (text) send({ text }, text);
      ui.input.value = "";
      ui.input.focus();
    });
    ui.restart.addEventListener("click", restart);
    window.addEventListener("online", reconnectNow);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") reconnectNow();
    });
    connect();
  }

  return { start };
}

function main() {
  const tenant = tenantOf(location.pathname);
  if (tenant === null) {
    ui.status.dataset.state = "offline";
    ui.status.textContent = "No chat here: the address should be /chat/<name>.";
    return;
  }
  ui.title.textContent = tenant;
  document.title = `${tenant} · chat`;
  Chat(tenant).start();
  ui.input.focus();
}

main();
