/* The agent console of one tenant, served at /agent/<tenant> (gateway/console.py).
 *
 * It reads and acts through the hand-off API (gateway/handoffs.py) with the token typed in,
 * kept in sessionStorage (this tab only). The queue is a page of GET /v1/<t>/handoffs; a
 * ticket is GET /v1/<t>/handoffs/<id> and then its event stream, read with fetch (EventSource
 * cannot send an Authorization header) and resumed from the last turn's cursor after a cut.
 * A reply carries an idempotency id, kept until the server takes it, so a reply sent again
 * after a lost answer is said once. No framework, no build step; the CSP allows no inline
 * script or style, and every text from the server goes in with textContent.
 */
"use strict";

const PAGE = 50;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 8000;

const $ = (id) => document.getElementById(id);
const ui = {
  title: $("title"), login: $("login"), agent: $("agent"), token: $("token"), forget: $("forget-token"),
  notice: $("notice"), filter: $("filter"), status: $("status"), queue: $("queue-name"), tickets: $("tickets"),
  more: $("more"), ticket: $("ticket"), ticketTitle: $("ticket-title"), facts: $("ticket-facts"),
  stream: $("stream"), transcript: $("transcript"), reply: $("reply"), replyText: $("reply-text"),
  assign: $("assign"), resume: $("resume"), resumeNode: $("resume-node"), resumeVars: $("resume-vars"),
  close: $("close"),
};

function tenantOf(path) {
  const match = /^\/agent\/([^/]+)\/?$/.exec(path);
  return match ? decodeURIComponent(match[1]) : null;
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/* sessionStorage, or the page's memory if the browser refuses it. */
const session = (() => {
  const memory = new Map();
  return {
    get(name) {
      try { return sessionStorage.getItem(`parlour:agent:${name}`) || memory.get(name) || ""; }
      catch (error) { return memory.get(name) || ""; }
    },
    set(name, value) {
      memory.set(name, value);
      try {
        if (value) sessionStorage.setItem(`parlour:agent:${name}`, value);
        else sessionStorage.removeItem(`parlour:agent:${name}`);
      } catch (error) { /* kept in memory */ }
    },
  };
})();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function say(text, error = false) {
  ui.notice.textContent = text;
  ui.notice.classList.toggle("error", error);
}

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function Api(tenant) {
  const base = `/v1/${encodeURIComponent(tenant)}/handoffs`;
  const headers = (more = {}) => ({ Authorization: `Bearer ${session.get("token")}`, ...more });

  async function call(method, path, body) {
    const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) init.body = JSON.stringify(body);
    const answer = await fetch(base + path, init);
    const parsed = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      const error = parsed.error || {};
      throw new ApiError(answer.status, error.code || "http", error.message || `HTTP ${answer.status}`);
    }
    return parsed;
  }

  return {
    list: (status, queue, after) => {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (status) query.set("status", status);
      if (queue) query.set("queue", queue);
      if (after) query.set("after", after);
      return call("GET", `?${query}`);
    },
    get: (id) => call("GET", `/${encodeURIComponent(id)}`),
    act: (id, action, body) => call("POST", `/${encodeURIComponent(id)}/${action}`, body),
    events: (id, after, signal) => fetch(`${base}/${encodeURIComponent(id)}/events`
      + (after ? `?after=${encodeURIComponent(after)}` : ""),
      { headers: headers(after ? { "Last-Event-ID": after, Accept: "text/event-stream" } : { Accept: "text/event-stream" }),
        signal }),
  };
}

/* Server-sent events from a fetch response: calls onEvent(name, id, data) per event. */
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "id") id = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(name, id, JSON.parse(data.join("\n")));
    }
  }
}

// ------------------------------------------------------------------ rendering

function ticketLabel(ticket) {
  const who = ticket.user && (ticket.user.name || ticket.user.id);
  return `${who || ticket.key} · ${ticket.queue || "no queue"} · ${ticket.status}${ticket.agent ? ` (${ticket.agent})` : ""}`;
}

function factsOf(ticket) {
  return [["Reason", ticket.reason], ["Conversation", ticket.key], ["Flow", `${ticket.flow} at ${ticket.node}`],
    ["Queue", ticket.queue || "none"], ["Status", ticket.status + (ticket.resolution ? ` (${ticket.resolution})` : "")],
    ["Agent", ticket.agent || "nobody yet"], ["Opened", when(ticket.created_at)], ["Messages", ticket.messages]];
}

function bubble(className, who, text) {
  const node = el("div", `msg ${className}`);
  node.append(el("span", "who", who), el("p", "text", text));
  return node;
}

function replyText(reply) {
  const parts = reply.text ? [reply.text] : [];
  const options = reply.buttons || (reply.list && reply.list.items) || [];
  if (options.length) parts.push(options.map((o) => `[${o.title}]`).join(" "));
  if (reply.media) parts.push(`(${reply.media.kind || "file"}: ${reply.media.url})`);
  return parts.join("\n");
}

/* One turn as nodes: what came in, then what was said to the user. */
function turnNodes(turn, ticketId) {
  const input = turn.in || {};
  const nodes = [];
  const during = turn.ticket === ticketId;
  const spoke = input.kind === "agent" && input.action === "message";
  if (input.kind === "message") {
    nodes.push(bubble(`user${during ? "" : " before"}`, "User", input.text || `(pressed ${input.button})`));
  } else if (input.kind === "agent" && !spoke) {
    nodes.push(el("p", "note", `${input.agent || "An agent"} ${input.action === "assign" ? "took the ticket" : "closed the ticket"}`));
  } else if (input.kind === "resume") {
    nodes.push(el("p", "note", `${input.agent || "An agent"} resumed the flow${input.node ? ` at ${input.node}` : ""}`));
  } else if (input.kind && input.kind !== "message") {
    nodes.push(el("p", "note", input.kind === "start" ? `Flow ${input.flow} started` : `(${input.kind})`));
  }
  for (const reply of turn.out || []) {
    nodes.push(spoke ? bubble("agent", input.agent || "Agent", replyText(reply))
      : bubble(`bot${during ? "" : " before"}`, "Bot", replyText(reply)));
  }
  for (const node of nodes) node.dataset.cursor = turn.cursor;
  return nodes;
}

// ------------------------------------------------------------------ the console

function Console(tenant) {
  const api = Api(tenant);
  let current = null;      // the open ticket
  let cursor = null;       // its last turn shown
  let stream = null;       // the AbortController of its event stream
  let pendingReply = null; // {text, id}: a reply not yet taken by the server
  let next = null;         // the queue's next page

  async function guarded(what, action) {
    if (!session.get("token")) {
      say("Type a token first.", true);
      return false;
    }
    try {
      await action();
      return true;
    } catch (error) {
      if (error instanceof ApiError) say(`${what}: ${error.message}`, true);
      else say(`${what}: the server cannot be reached (${error.message})`, true);
      return false;
    }
  }

  // -- the queue

  function showQueue(tickets, append) {
    if (!append) ui.tickets.replaceChildren();
    for (const ticket of tickets) {
      const item = el("li");
      const button = el("button", "ticket-link", ticketLabel(ticket));
      button.type = "button";
      button.dataset.id = ticket.id;
      if (current && current.id === ticket.id) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => open(ticket.id));
      item.append(button, el("span", "reason", ticket.reason));
      ui.tickets.append(item);
    }
    if (!append && !tickets.length) ui.tickets.append(el("li", "empty", "No tickets."));
  }

  function refresh(append = false) {
    return guarded("The queue", async () => {
      const page = await api.list(ui.status.value, ui.queue.value.trim(), append ? next : null);
      next = page.next;
      ui.more.hidden = !next;
      showQueue(page.tickets, append);
      if (!append) say(`${page.tickets.length}${next ? "+" : ""} ticket(s).`);
    });
  }

  // -- one ticket

  function showTicket(ticket) {
    current = ticket;
    ui.ticket.hidden = false;
    ui.ticketTitle.textContent = ticketLabel(ticket);
    ui.facts.replaceChildren(...factsOf(ticket).flatMap(([name, value]) => [el("dt", "", name), el("dd", "", value)]));
    const closed = ticket.status === "closed";
    for (const control of [ui.replyText, ui.assign, ui.close, ...ui.resume.elements, ...ui.reply.elements]) {
      control.disabled = closed;
    }
    const listed = ui.tickets.querySelector(`button[data-id="${CSS.escape(ticket.id)}"]`);
    if (listed) listed.textContent = ticketLabel(ticket);
  }

  function addTurn(turn) {
    if (ui.transcript.querySelector(`[data-cursor="${CSS.escape(turn.cursor)}"]`)) return;
    ui.transcript.append(...turnNodes(turn, current.id));
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
    cursor = turn.cursor;
  }

  function open(id) {
    return guarded("The ticket", async () => {
      if (stream) stream.abort();
      const { ticket, transcript } = await api.get(id);
      ui.transcript.replaceChildren();
      cursor = null;
      pendingReply = null;
      showTicket(ticket);
      for (const item of ui.tickets.querySelectorAll("button[aria-current]")) item.removeAttribute("aria-current");
      const listed = ui.tickets.querySelector(`button[data-id="${CSS.escape(id)}"]`);
      if (listed) listed.setAttribute("aria-current", "true");
      for (const turn of transcript) addTurn(turn);
      follow(id);
    });
  }

  /* The ticket's event stream, kept open (and resumed from the last cursor) until another
   * ticket is opened. */
  async function follow(id) {
    const controller = new AbortController();
    stream = controller;
    let wait = BACKOFF_MIN_MS;
    while (!controller.signal.aborted) {
      try {
        const response = await api.events(id, cursor, controller.signal);
        if (!response.ok) throw new ApiError(response.status, "http", `HTTP ${response.status}`);
        ui.stream.dataset.state = "live";
        ui.stream.textContent = "Live";
        wait = BACKOFF_MIN_MS;
        await readEvents(response, (name, eventId, data) => {
          if (current === null || current.id !== id) return;
          if (name === "turn") addTurn(data);
          else if (name === "ticket") showTicket(data);
        });
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
          ui.stream.dataset.state = "closed";
          ui.stream.textContent = `Not live: ${error.message}`;
          return;
        }
      }
      if (controller.signal.aborted) return;
      ui.stream.dataset.state = "reconnecting";
      ui.stream.textContent = "Reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, BACKOFF_MAX_MS);
    }
  }

  function agentName() {
    return ui.agent.value.trim() || null;
  }

  async function act(what, action, body) {
    const id = current.id;
    return guarded(what, async () => {
      const answer = await api.act(id, action, body);
      if (current && current.id === id) showTicket(answer.ticket);
      say(`${what}: done.`);
    });
  }

  // -- wiring

  ui.title.textContent = `Hand-offs · ${tenant}`;
  document.title = `${tenant} · hand-offs`;
  ui.agent.value = session.get("agent");
  ui.token.value = session.get("token");
  ui.login.addEventListener("submit", (event) => {
    event.preventDefault();
    session.set("token", ui.token.value.trim());
    session.set("agent", ui.agent.value.trim());
    refresh();
  });
  ui.forget.addEventListener("click", () => {
    session.set("token", "");
    ui.token.value = "";
    if (stream) stream.abort();
    say("The token is forgotten.");
  });
  ui.filter.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  ui.more.addEventListener("click", () => refresh(true));
  ui.reply.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = ui.replyText.value.trim();
    if (!text || !current) return;
    if (!pendingReply || pendingReply.text !== text) pendingReply = { text, id: randomId() };
    const sent = pendingReply;
    const taken = await act("The reply", "messages", { text: sent.text, id: sent.id, agent: agentName() });
    if (taken && pendingReply === sent) {
      pendingReply = null;
      ui.replyText.value = "";
      ui.replyText.focus();
    }
  });
  ui.assign.addEventListener("click", () => {
    if (!agentName()) return say("Type your name first.", true);
    return act("Assigning", "assign", { agent: agentName() });
  });
  ui.resume.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { agent: agentName() };
    if (ui.resumeNode.value.trim()) body.node = ui.resumeNode.value.trim();
    const raw = ui.resumeVars.value.trim();
    if (raw) {
      let vars;
      try { vars = JSON.parse(raw); } catch (error) { return say(`The variables are not JSON: ${error.message}`, true); }
      if (vars === null || typeof vars !== "object" || Array.isArray(vars)) {
        return say("The variables are a JSON object, such as {\"order_id\": \"123456\"}.", true);
      }
      body.vars = vars;
    }
    return act("Resuming", "resume", body);
  });
  ui.close.addEventListener("click", () => act("Closing", "close", { agent: agentName() }));

  if (session.get("token")) refresh();
  else say("Type your token to see the tickets.");
}

const tenant = tenantOf(location.pathname);
if (tenant) Console(tenant);
else say("This page is /agent/<tenant>.", true);
