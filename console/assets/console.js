// The distsync console's page: reads api/board once a second and shows it. Every name
// and value is set as text (never as markup), and every request goes to this origin by
// a relative path, so the page works wherever the router is mounted.
"use strict";

const REFRESH_MS = 1000;
const TICK_MS = 250;

const state = {
  filter: "",
  page: 0,
  pages: 1,
  actions: false,
  receivedAt: 0,
  openDeadLetters: new Set(),
  deadLetters: new Map(),
  deadLetterCounts: new Map(),
};

function $(id) { return document.getElementById(id); }

// An element with attributes and children; strings become text nodes.
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

// A time cell that counts on from `ms` (as read) while the page waits for the next read.
function since(ms) {
  if (ms === null || ms === undefined) return el("td", { class: "time", title: "the store does not record it" }, "—");
  return el("td", { class: "time held-for", "data-age": ms }, duration(ms));
}

// A time cell that counts down from `ms` (as read): a session's time left, unless it renews.
function left(ms) {
  if (ms === null || ms === undefined) return el("td", { class: "time", title: "the store does not say" }, "—");
  return el("td", { class: "time time-left", "data-left": ms, title: "unless the session renews" }, duration(ms));
}

function tick() {
  const passed = Date.now() - state.receivedAt;
  for (const cell of document.querySelectorAll("[data-age]")) {
    cell.textContent = duration(Number(cell.dataset.age) + passed);
  }
  for (const cell of document.querySelectorAll("[data-left]")) {
    cell.textContent = duration(Math.max(0, Number(cell.dataset.left) - passed));
  }
}

function credentials() {
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  const operator = $("operator").value.trim();
  if (operator) headers["X-Distsync-Operator"] = operator;
  return headers;
}

function notify(text, bad) {
  const notice = $("notice");
  notice.textContent = text;
  notice.hidden = false;
  notice.classList.toggle("bad", Boolean(bad));
}

async function act(path, body, what) {
  let answer;
  try {
    const response = await fetch(`api/actions/${path}`, { method: "POST", headers: credentials(), body: JSON.stringify(body) });
    answer = await response.json().catch(() => ({ done: false, why: `HTTP ${response.status}` }));
    if (!response.ok) {
      notify(`${what}: refused (${response.status}): ${answer.why || ""}`, true);
      return false;
    }
  } catch (error) {
    notify(`${what}: the console did not answer (${error})`, true);
    return false;
  }
  notify(answer.done ? `${what}: done` : `${what}: nothing done: ${answer.why}`, !answer.done);
  refresh();
  return answer.done;
}

// Asks before acting: `lines` lists what else the action touches.
function confirmThen(title, text, lines, run) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-list").replaceChildren(...lines.map((line) => el("li", {}, line)));
  const yes = $("confirm-yes");
  const no = $("confirm-no");
  const close = () => { yes.onclick = null; no.onclick = null; dialog.close(); };
  yes.onclick = () => { close(); run(); };
  no.onclick = close;
  dialog.showModal();
}

async function breakLock(name, session) {
  let lines = [];
  if (session) {
    try {
      const response = await fetch(`api/sessions/${encodeURIComponent(session)}`);
      const found = await response.json();
      lines = (found.holds || []).map((hold) =>
        `${hold.holding ? "holds" : "waits for"} ${hold.kind} ${hold.name}` + (hold.token ? ` (token ${hold.token})` : ""));
    } catch (error) {
      lines = [`(what else the session holds could not be read: ${error})`];
    }
  }
  confirmThen(`Break ${name}?`,
    `Breaking ends the holder's session${session ? ` ${session}` : ""}, and with it everything it holds:`,
    lines.length ? lines : ["(nothing else is listed)"],
    () => act("break", { name }, `break ${name}`));
}

function actionButton(label, action, onclick, danger) {
  if (!state.actions) return null;
  return el("button", { type: "button", "data-action": action, class: danger ? "danger" : undefined, onclick }, label);
}

function emptyRow(columns, text) {
  return el("tr", {}, el("td", { class: "empty", colspan: columns }, text));
}

function holderList(holds, ordered) {
  if (!holds.length) return "—";
  return el(ordered ? "ol" : "ul", {}, holds.map((hold) =>
    el("li", {}, `session ${hold.session || "?"}` + (hold.token ? `, token ${hold.token}` : "") + ` (${hold.mode})`)));
}

function renderLocks(section) {
  return section.items.map((line) => {
    const holder = line.holders[0];
    const cells = [
      el("td", {}, line.kind),
      el("td", { class: "name" }, line.name),
      el("td", { class: "session" }, line.holders.length > 1 ? holderList(line.holders, false) : (holder && holder.session) || "—"),
      el("td", { class: "number token" }, holder && holder.token ? String(holder.token) : "—"),
      since(holder ? holder.age_ms : null),
      left(holder ? holder.expires_in_ms : null),
      el("td", { class: "number" }, line.permits === null ? "—" : String(line.permits)),
      el("td", {}, holderList(line.waiters, true)),
      el("td", {},
        line.kind === "lock" && holder ? actionButton("Break", "break", () => breakLock(line.name, holder.session), true) : null,
        line.kind === "lock" && holder ? actionButton("Ask to release", "request-release", () =>
          confirmThen(`Ask the holder of ${line.name} to release?`, "Its release_requested() fires; it decides.", [],
            () => act("request-release", { name: line.name }, `ask ${line.name}'s holder to release`))) : null),
    ];
    return el("tr", { "data-name": line.name, "data-kind": line.kind }, cells);
  });
}

function renderElections(section) {
  return section.items.map((election) => {
    const leader = election.leader;
    const candidates = election.candidates.length ? el("ol", {}, election.candidates.map((candidate) =>
      el("li", { "data-candidate": candidate.session },
        `session ${candidate.session || "?"} `,
        candidate.session ? actionButton("Hand over to this one", "prefer", () =>
          confirmThen(`Ask the leader of ${election.name} to hand over?`,
            `The leader is asked to hand over to session ${candidate.session}; it decides.`, [],
            () => act("prefer", { name: election.name, candidate: candidate.session }, `hand ${election.name} over`))) : null)))
      : "—";
    return el("tr", { "data-name": election.name },
      el("td", { class: "name" }, election.name),
      el("td", { class: "value" }, election.value === null ? "—" : election.value),
      el("td", { class: "number token" }, election.term === null ? "—" : String(election.term)),
      el("td", { class: "session" }, (leader && leader.session) || "—"),
      since(leader ? leader.age_ms : null),
      el("td", {}, candidates));
  });
}

function renderGroups(section) {
  return section.items.map((group) => el("tr", { "data-name": group.name },
    el("td", { class: "name" }, group.name),
    el("td", {}, el("ul", {}, group.members.map((member) =>
      el("li", { "data-member": member.id }, `${member.id}, session ${member.session || "?"}` +
        (member.metadata ? `, ${member.metadata}` : "")))))));
}

function renderShards(section) {
  return section.items.map((shard) => el("tr", { "data-name": `${shard.group}/${shard.shard}` },
    el("td", {}, shard.group),
    el("td", { class: "number" }, shard.shard),
    el("td", { class: "session" }, (shard.owner && shard.owner.session) || "—"),
    el("td", { class: "number token" }, shard.owner && shard.owner.token ? String(shard.owner.token) : "—"),
    since(shard.owner ? shard.owner.age_ms : null)));
}

function renderDeadLetters(queue) {
  const items = state.deadLetters.get(queue);
  if (!items) return el("p", {}, "reading…");
  if (items.error) return el("p", { class: "bad" }, items.error);
  if (!items.length) return el("p", {}, "no dead letters");
  return el("ol", { class: "dead-letters" }, items.map((entry) => el("li", { "data-item": entry.item },
    el("code", {}, entry.text), " ",
    actionButton("Requeue", "requeue", () => confirmThen(`Requeue this dead letter to ${queue}?`, entry.text, [],
      () => act("requeue", { queue, item: entry.item }, `requeue to ${queue}`).then(() => loadDeadLetters(queue)))),
    " ",
    actionButton("Drop", "drop", () => confirmThen(`Drop this dead letter of ${queue}?`, entry.text, [],
      () => act("drop", { queue, item: entry.item }, `drop from ${queue}`).then(() => loadDeadLetters(queue))), true))));
}

async function loadDeadLetters(queue) {
  try {
    const response = await fetch(`api/dead-letters?queue=${encodeURIComponent(queue)}`);
    const answer = await response.json();
    state.deadLetters.set(queue, response.ok ? answer.items : { error: answer.error || `HTTP ${response.status}` });
  } catch (error) {
    state.deadLetters.set(queue, { error: String(error) });
  }
  render();
}

function renderQueues(section) {
  const rows = [];
  for (const queue of section.items) {
    const open = state.openDeadLetters.has(queue.name);
    if (open && state.deadLetterCounts.get(queue.name) !== queue.dead_letters) {
      state.deadLetterCounts.set(queue.name, queue.dead_letters);
      loadDeadLetters(queue.name);
    }
    rows.push(el("tr", { "data-name": queue.name },
      el("td", { class: "name" }, queue.name),
      el("td", { class: "number ready" }, String(queue.ready)),
      el("td", { class: "number in-flight" }, String(queue.in_flight)),
      since(queue.oldest_age_ms),
      el("td", { class: "number dead-letter-count" }, String(queue.dead_letters)),
      el("td", {}, queue.dead_letters || open ? el("button", { type: "button", "data-action": "dead-letters", onclick: () => {
        if (open) { state.openDeadLetters.delete(queue.name); state.deadLetters.delete(queue.name); state.deadLetterCounts.delete(queue.name); render(); }
        else { state.openDeadLetters.add(queue.name); state.deadLetterCounts.set(queue.name, queue.dead_letters); loadDeadLetters(queue.name); }
      } }, open ? "Hide dead letters" : "Show dead letters") : null)));
    if (open) rows.push(el("tr", { class: "dead-letter-row", "data-dead-letters": queue.name },
      el("td", { colspan: 6 }, renderDeadLetters(queue.name))));
  }
  return rows;
}

function utc(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function renderJobs(section) {
  const readAt = state.board.read_at_ms;
  return section.items.map((job) => {
    const ran = job.last_occurrence_ms !== null;
    const state_ = !ran ? "never ran" : job.behind ? `behind: ${utc(job.due_ms)} has not run` : "on time";
    return el("tr", { "data-name": job.name, class: job.behind ? "behind" : "" },
      el("td", { class: "name" }, job.name),
      el("td", {}, job.schedule),
      el("td", { class: "time" }, ran ? utc(job.last_occurrence_ms) : "—"),
      since(ran ? readAt - job.last_started_ms : null),
      el("td", { class: "number" }, String(job.runs)),
      el("td", { class: "number token" }, job.last_token ? String(job.last_token) : "—"),
      el("td", { class: "time" }, job.next_ms === null ? "—" : utc(job.next_ms)),
      left(job.next_ms === null ? null : job.next_ms - readAt),
      el("td", { class: "job-state" }, state_));
  });
}

function renderSessions(section) {
  return section.items.map((session) => el("tr", { "data-name": session.id },
    el("td", { class: "session" }, session.id),
    left(session.expires_in_ms),
    el("td", {}, el("ul", {}, session.holds.map((hold) =>
      el("li", {}, `${hold.holding ? "holds" : "waits for"} ${hold.kind} ${hold.name}` + (hold.token ? ` (token ${hold.token})` : "")))))));
}

const SECTIONS = [
  ["locks", renderLocks, 9, "no lock, read-write lock or semaphore is held or waited for"],
  ["elections", renderElections, 6, "no election has candidates"],
  ["groups", renderGroups, 2, "no group has members"],
  ["shards", renderShards, 5, "no shard is owned"],
  ["queues", renderQueues, 6, "no queue holds items"],
  ["jobs", renderJobs, 9, "no scheduled job has started on this store"],
  ["sessions", renderSessions, 3, "no session holds anything listed"],
];

function render() {
  const board = state.board;
  if (!board) return;
  const store = $("store");
  store.textContent = board.up ? `${board.backend}: up` : `${board.backend}: DOWN`;
  store.className = `store ${board.up ? "up" : "down"}`;
  $("read").textContent = board.up ? `read in ${board.read_ms} ms` : board.error || "";
  state.actions = board.actions;
  $("mode").textContent = board.actions ? "actions on (they need the token)" : "read-only: actions are off";
  $("credentials").hidden = !board.actions;
  state.pages = board.pages;
  $("paging").textContent = `page ${board.page + 1} of ${board.pages}`;
  for (const [id, draw, columns, none] of SECTIONS) {
    const section = board[id];
    const body = document.querySelector(`#${id} tbody`);
    const rows = board.up ? draw(section) : [];
    body.replaceChildren(...(rows.length ? rows : [emptyRow(columns, board.up ? none : "the store is down")]));
    document.querySelector(`#${id} h2 small`).textContent = board.up ? `${section.total}` : "";
  }
  tick();
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  try {
    const query = new URLSearchParams({ filter: state.filter, page: String(state.page) });
    const response = await fetch(`api/board?${query}`);
    state.board = await response.json();
    state.receivedAt = Date.now();
    render();
  } catch (error) {
    const store = $("store");
    store.textContent = "console unreachable";
    store.className = "store down";
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function start() {
  $("filter").addEventListener("input", (event) => { state.filter = event.target.value; state.page = 0; refresh(); });
  $("previous").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); refresh(); });
  $("next").addEventListener("click", () => { state.page = Math.min(state.pages - 1, state.page + 1); refresh(); });
  const operator = $("operator");
  operator.value = localStorage.getItem("distsync-operator") || "";
  operator.addEventListener("change", () => localStorage.setItem("distsync-operator", operator.value));
  const token = $("token");
  token.value = sessionStorage.getItem("distsync-token") || "";
  token.addEventListener("change", () => sessionStorage.setItem("distsync-token", token.value));
  setInterval(tick, TICK_MS);
  refresh();
}

start();
