/* The chat page's mailbox (gateway/mailbox.py): what the flow said while the page was closed or
 * its socket down (a timer's message, an API call's result), read over HTTP.
 *
 * On every (re)connection the page reads GET /v1/<tenant>/web/messages?user=&after=<cursor>,
 * shows what it had not shown, and acknowledges it (DELETE ...?upto=<cursor>). The cursor and
 * the highest reply number shown (`seq`, which pushes carry too) live in localStorage: a reply
 * both pushed and read is shown once. Pushes that come while the page catches up wait for it,
 * so that replies show in the order the flow said them. A push is acknowledged by a read a
 * little later, which also keeps the mailbox small.
 */
"use strict";

const MAILBOX_SYNC_DELAY_MS = 2000;  // after a push: one read acknowledges a burst of them

/* `url`: the mailbox's address; `saved`: the page's storage; `show(replies)`: adds bot replies. */
function Mailbox(url, saved, show) {
  let state = saved.get("mailbox", { cursor: null, seq: 0 });
  let user = null;
  let held = null;      // pushes that came while catching up, or null
  let running = null;   // the read under way
  let again = false;    // read again once it is done
  let syncTimer = 0;

  function save() {
    saved.set("mailbox", state);
  }

  /* The replies not shown yet (a reply without a number is always new), shown. */
  function showNew(replies) {
    const fresh = [];
    for (const { cursor, seq, at, ...reply } of replies) {
      if (typeof seq === "number") {
        if (seq <= state.seq) continue;
        state.seq = seq;
      }
      fresh.push(reply);
    }
    save();
    if (fresh.length) show(fresh);
  }

  async function request(method, query) {
    const response = await fetch(`${url}?${new URLSearchParams({ user, ...query })}`, { method, cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw Object.assign(new Error(body.error.message), { code: body.error.code });
    return body;
  }

  /* Every page after the cursor: shown, then acknowledged. */
  async function readAll() {
    const reader = user;
    for (;;) {
      let body;
      try {
        body = await request("GET", state.cursor ? { after: state.cursor } : {});
      } catch (error) {
        if (error.code !== "invalid_request" || state.cursor === null) throw error;
        state.cursor = null;  // a cursor the server cannot read: from the oldest kept (seq skips the shown)
        continue;
      }
      if (reader !== user) return;  // a new chat began meanwhile: these were the old one's
      showNew(body.replies);
      if (body.next && body.next !== state.cursor) {
        state.cursor = body.next;
        save();
        await request("DELETE", { upto: body.next });
      }
      if (!body.more) return;
    }
  }

  function sync() {
    if (running) {
      again = true;
      return running;
    }
    running = readAll()
      .catch(() => { /* offline or refused: the next connection reads again */ })
      .finally(() => {
        running = null;
        if (again) {
          again = false;
          sync();
        }
      });
    return running;
  }

  /* The socket of `who` is open: read what was missed, then show the pushes held meanwhile. */
  function connected(who) {
    user = who;
    held = held || [];
    sync().finally(() => {
      const waiting = held || [];
      held = null;
      showNew(waiting);
    });
  }

  function pushed(replies) {
    if (held) {
      held.push(...replies);
      return;
    }
    showNew(replies);
    clearTimeout(syncTimer);
    syncTimer = setTimeout(sync, MAILBOX_SYNC_DELAY_MS);
  }

  /* A new chat: a new user, a new mailbox. */
  function forget() {
    clearTimeout(syncTimer);
    user = null;
    state = { cursor: null, seq: 0 };
    held = null;
    save();
  }

  return { connected, pushed, forget };
}
