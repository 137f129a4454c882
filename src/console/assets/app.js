// The console: log in, then tables, views, jobs and a live channel view, each a section chosen
// by the URL fragment (#tables/calls, #views/v, #jobs/<id>, #live/<channel id>). Every value
// from the API is shown through dom.js (text nodes only).

import { Api, ApiError } from "./api.js";
import { bytes, errorText, fill, h, rowsTable, secondsBetween } from "./dom.js";
import { LiveChannel } from "./live.js";

const api = new Api();
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const logoutButton = document.getElementById("logout");
const notice = document.getElementById("notice");

/** Set by go(): the next section keeps the notice that led to it ("Created ..."). */
let keepNotice = false;

function go(hash) {
  keepNotice = true;
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** The section's cleanup (timers, an open EventSource), run when another one is shown. */
let leave = () => {};

function say(text, kind = "error") {
  notice.hidden = !text;
  notice.className = kind;
  fill(notice, text || "");
}

/** Runs `work`, showing its failure in the notice line; returns its result or undefined. */
async function attempt(work) {
  try {
    return await work();
  } catch (err) {
    say(errorText(err));
    return undefined;
  }
}

api.onSignedOut = () => {
  leave();
  leave = () => {};
  say("Signed out: log in again.", "info");
  showLogin();
};

logoutButton.addEventListener("click", async () => {
  await api.logout();
  say("Logged out.", "info");
});

window.addEventListener("hashchange", () => route());

function route() {
  // The section being left stops first (its pollers, its stream), whatever the new address.
  leave();
  leave = () => {};
  if (!api.signedIn) return showLogin();
  const [section, ...rest] = location.hash.replace(/^#/, "").split("/");
  let arg = null;
  try {
    arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  } catch (_) {
    // A malformed escape (`#tables/%`): nothing has that name.
    fill(main);
    say("Not found: the address names nothing (malformed escape).");
    keepNotice = false;
    return undefined;
  }
  if (!keepNotice) say("");
  keepNotice = false;
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("current", link.dataset.section === (section || "tables"));
  }
  switch (section) {
    case "views": return showViews(arg);
    case "jobs": return showJobs(arg);
    case "live": return showLive(arg);
    default: return showTables(arg);
  }
}

// ---------------------------------------------------------------- login

function showLogin() {
  nav.hidden = true;
  logoutButton.hidden = true;
  fill(who, "");
  const email = h("input", { id: "login-email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "login-password", type: "password", autocomplete: "current-password", required: true, minlength: 8 });
  const submit = async (register) => {
    say("");
    if (!email.value || !password.value) return say("Enter an e-mail and a password.");
    await attempt(async () => {
      if (register) await api.register(email.value, password.value);
      await api.login(email.value, password.value);
      signedIn();
    });
  };
  const form = h("form", { id: "login", class: "card narrow", onsubmit: (e) => { e.preventDefault(); submit(false); } },
    h("h1", {}, "Log in"),
    h("label", {}, "E-mail", email),
    h("label", {}, "Password", password),
    h("div", { class: "buttons" },
      h("button", { id: "login-submit", type: "submit" }, "Log in"),
      h("button", { id: "register-submit", type: "button", class: "secondary", onclick: () => submit(true) }, "Register")),
    h("p", { class: "hint" }, "Tokens are kept in this page's memory only: reloading it asks for the password again."));
  fill(main, form);
  email.focus();
}

function signedIn() {
  nav.hidden = false;
  logoutButton.hidden = false;
  fill(who, api.email);
  if (!location.hash) location.hash = "#tables";
  route();
}

// ---------------------------------------------------------------- rows

/** The rows route's own query parameters (the server's `RESERVED_KEYS` in src/query/params.rs,
 *  kept equal by a Rust test): a column with one of these names cannot be filtered. */
const RESERVED_QUERY_KEYS = ["select", "order", "limit", "cursor", "page", "size", "format"];

/** Rows of `path` (a table's or a view's rows route) with filters, a page size and keyset
 *  pages (the cursors of the pages before are kept for "Previous"). */
function rowsBrowser(path, columns) {
  const filters = [];
  const cursors = [null];
  let page = 0;
  const column = h("select", { class: "filter-column", "aria-label": "column" }, columns.map((c) => h("option", { value: c }, c)));
  const op = h("select", { class: "filter-op", "aria-label": "operator" },
    ["eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "in", "is"].map((o) => h("option", { value: o }, o)));
  const value = h("input", { class: "filter-value", placeholder: "value (in: a,b; is: null or notnull)", "aria-label": "value" });
  const limit = h("select", { class: "rows-limit", "aria-label": "rows per page" }, [25, 100, 500].map((n) => h("option", { value: n, selected: n === 25 }, `${n} rows`)));
  const chips = h("span", { class: "chips" });
  const status = h("span", { class: "rows-status" });
  const out = h("div", { class: "rows-out" });
  const prev = h("button", { type: "button", class: "rows-prev secondary", disabled: true, onclick: () => load(page - 1) }, "Previous");
  const next = h("button", { type: "button", class: "rows-next secondary", disabled: true, onclick: () => load(page + 1) }, "Next");

  function query(cursor) {
    const params = new URLSearchParams();
    for (const f of filters) params.append(f.column, f.op === "in" ? `in.(${f.value})` : `${f.op}.${f.value}`);
    params.set("limit", limit.value);
    if (cursor) params.set("cursor", cursor);
    return `${path}?${params}`;
  }

  async function load(n) {
    const body = await attempt(() => api.get(query(cursors[n])));
    if (!body) return;
    say("");
    page = n;
    cursors[n + 1] = body.next_cursor;
    cursors.length = n + 2;
    // The declared column order: an object's keys put integer-like names first.
    const extra = body.rows.length ? Object.keys(body.rows[0]).filter((k) => !columns.includes(k)) : [];
    const shown = columns.concat(extra);
    fill(out, rowsTable(shown, body.rows));
    fill(status, `page ${n + 1}: ${body.rows.length} rows${body.next_cursor ? ", more after" : ""}`);
    prev.disabled = n === 0;
    next.disabled = !body.next_cursor;
  }

  function drawChips() {
    fill(chips, filters.map((f, i) => h("span", { class: "chip" }, `${f.column} ${f.op} ${f.value}`,
      h("button", { type: "button", class: "chip-remove", "aria-label": "remove filter", onclick: () => { filters.splice(i, 1); drawChips(); load(0); } }, "×"))));
  }

  const add = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    if (RESERVED_QUERY_KEYS.includes(column.value)) {
      say(`The column "${column.value}" cannot be filtered: its name is one of the rows route's own query parameters (${RESERVED_QUERY_KEYS.join(", ")}).`);
      return;
    }
    filters.push({ column: column.value, op: op.value, value: value.value });
    value.value = "";
    drawChips();
    load(0);
  } }, column, op, value, h("button", { type: "submit", class: "filter-add" }, "Filter"), limit);
  limit.addEventListener("change", () => load(0));
  load(0);
  return h("section", { class: "rows-browser" }, add, chips, out, h("div", { class: "pager" }, prev, next, status));
}

// ---------------------------------------------------------------- tables

/** The last upload's bar and line, kept across the section's redraws. */
const lastUpload = { value: 0, max: 1, text: "", events: 0 };

async function showTables(selected) {
  const list = h("ul", { id: "table-list", class: "list" });
  const detail = h("div", { id: "table-detail" });
  const file = h("input", { id: "upload-file", type: "file", accept: ".parquet,application/vnd.apache.parquet", required: true });
  const name = h("input", { id: "upload-name", placeholder: "table name", pattern: "[A-Za-z_][A-Za-z0-9_]{0,62}", required: true });
  const mode = h("select", { id: "upload-mode", "aria-label": "upload mode" },
    h("option", { value: "create" }, "as a new table"),
    h("option", { value: "append" }, "appended to the table"),
    h("option", { value: "replace" }, "replacing the table's rows"));
  // data-events: how many progress reports the browser made (the test reads it).
  const progress = h("progress", { id: "upload-progress", max: lastUpload.max, value: lastUpload.value, dataset: { events: String(lastUpload.events) } });
  const progressText = h("span", { id: "upload-progress-text" }, lastUpload.text);
  const show = (value, max, text) => {
    Object.assign(lastUpload, { value, max, text });
    progress.dataset.events = String(lastUpload.events);
    progress.max = max;
    progress.value = value;
    fill(progressText, text);
  };
  file.addEventListener("change", () => {
    const f = file.files[0];
    if (f && !name.value) name.value = f.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_]/g, "_").replace(/^([0-9])/, "_$1");
  });
  const upload = h("form", { id: "upload", class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const f = file.files[0];
    if (!f) return say("Choose a Parquet file.");
    const form = new FormData();
    form.append("file", f);
    let path = "/tables/create/";
    if (mode.value === "create") {
      form.append("table_name", name.value.trim());
    } else {
      form.append("mode", mode.value);
      path = `/tables/${encodeURIComponent(name.value.trim())}/rows/`;
    }
    lastUpload.events = 0;
    show(0, f.size || 1, `sending ${bytes(f.size)}`);
    const result = await attempt(() => api.upload(path, form, (sent, total) => {
      lastUpload.events += 1;
      show(sent, total, `sent ${bytes(sent)} of ${bytes(total)}`);
    }));
    if (!result) return show(0, 1, "upload failed");
    const rows = result.row_count;
    show(progress.max, progress.max, `done: ${result.table_name} has ${rows} rows`);
    say(`Uploaded ${f.name}: ${result.table_name} has ${rows} rows.`, "info");
    go(`#tables/${encodeURIComponent(result.table_name)}`);
  } },
    h("h2", {}, "Upload a Parquet file"),
    h("div", { class: "inline" }, file, name, mode, h("button", { id: "upload-submit", type: "submit" }, "Upload")),
    h("div", { class: "inline" }, progress, progressText));
  fill(main, h("div", { class: "split" },
    h("aside", {}, h("h2", {}, "Tables"), list),
    h("div", {}, upload, detail)));
  const tables = await attempt(() => api.get("/tables/"));
  if (!tables) return;
  fill(list, tables.length ? tables.map((t) => h("li", {},
    h("a", { href: `#tables/${encodeURIComponent(t.table_name)}`, class: t.table_name === selected ? "current" : null }, t.table_name))) : h("li", { class: "hint" }, "No tables yet."));
  if (!selected) return;
  name.value = selected;
  const table = await attempt(() => api.get(`/tables/${encodeURIComponent(selected)}/`));
  if (!table) return;
  fill(detail, h("div", { class: "card" },
    h("h2", { id: "table-name" }, table.table_name),
    h("p", { id: "table-summary" }, `${table.row_count} rows, ${bytes(table.size_bytes)}, updated ${table.updated_at}`),
    h("p", { class: "columns" }, table.columns.map((c) => h("span", { class: "column" }, h("b", {}, c.column_name), ` ${c.column_type}`))),
    rowsBrowser(`/tables/${encodeURIComponent(selected)}/rows/`, table.columns.map((c) => c.column_name))));
}

// ---------------------------------------------------------------- views

async function showViews(selected) {
  const list = h("ul", { id: "view-list", class: "list" });
  const detail = h("div", { id: "view-detail" });
  const name = h("input", { id: "view-name", placeholder: "view name", required: true });
  const sql = h("textarea", { id: "view-sql", rows: 5, placeholder: "SELECT ... FROM your_table", required: true, spellcheck: "false" });
  const create = h("form", { id: "view-create", class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const view = await attempt(() => api.post("/views/create/", { view_name: name.value.trim(), sql_query: sql.value }));
    if (!view) return;
    say(`Created the view ${view.view_name} (${view.row_count} rows).`, "info");
    go(`#views/${encodeURIComponent(view.view_name)}`);
  } },
    h("h2", {}, "Create a view"),
    h("div", { class: "inline" }, name, h("button", { id: "view-create-submit", type: "submit" }, "Create")),
    sql);
  fill(main, h("div", { class: "split" },
    h("aside", {}, h("h2", {}, "Views"), list),
    h("div", {}, create, detail)));
  const views = await attempt(() => api.get("/views/"));
  if (!views) return;
  fill(list, views.length ? views.map((v) => h("li", {},
    h("a", { href: `#views/${encodeURIComponent(v.view_name)}`, class: v.view_name === selected ? "current" : null }, v.view_name))) : h("li", { class: "hint" }, "No views yet."));
  if (!selected) return;
  const path = `/views/${encodeURIComponent(selected)}/`;
  const view = await attempt(() => api.get(path));
  if (!view) return;
  const last = h("p", { id: "view-last-refresh" });
  const showLast = (r) => fill(last, r
    ? `last refresh: ${r.status} at ${r.finished_at || r.started_at}, ${r.row_count ?? "?"} rows in ${r.duration_ms ?? "?"} ms${r.error ? `: ${r.error}` : ""}`
    : "never refreshed");
  showLast(view.last_refresh);
  const rows = h("div", {}, rowsBrowser(`${path}rows/`, view.columns.map((c) => c.column_name)));
  const refresh = h("button", { id: "view-refresh", type: "button", onclick: async () => {
    refresh.disabled = true;
    const r = await attempt(() => api.post(`${path}refresh/`));
    refresh.disabled = false;
    if (!r) return;
    showLast(r);
    fill(rows, rowsBrowser(`${path}rows/`, view.columns.map((c) => c.column_name)));
  } }, "Refresh now");
  fill(detail, h("div", { class: "card" },
    h("h2", { id: "view-title" }, view.view_name),
    h("pre", { id: "view-sql-text", class: "sql" }, view.sql_query),
    h("p", {}, `reads ${view.base_relations.join(", ") || "nothing"}; ${view.volatile ? "volatile: every refresh runs" : "refreshes are skipped while its tables do not change"}; ${view.jobs.length} jobs, ${view.channels.length} channels`),
    h("div", { class: "inline" }, refresh, last),
    rows));
}

// ---------------------------------------------------------------- jobs

async function showJobs(selected) {
  const list = h("tbody", { id: "job-list" });
  const detail = h("div", { id: "job-detail" });
  const viewSelect = h("select", { id: "job-view", "aria-label": "view", required: true });
  const cron = h("input", { id: "job-cron", value: "*/10 * * * * *", "aria-label": "crontab", required: true });
  const timezone = h("input", { id: "job-timezone", value: "UTC", "aria-label": "time zone" });
  const overlap = h("select", { id: "job-overlap", "aria-label": "overlap" }, h("option", { value: "skip" }, "skip"), h("option", { value: "queue" }, "queue"));
  const create = h("form", { id: "job-create", class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const job = await attempt(() => api.post("/jobs/create/", { view_name: viewSelect.value, crontab_def: cron.value.trim(), timezone: timezone.value.trim() || "UTC", overlap: overlap.value }));
    if (!job) return;
    say(`Created a job refreshing ${job.view_name} on ${job.crontab_def}.`, "info");
    go(`#jobs/${job.job_id}`);
  } },
    h("h2", {}, "Create a job"),
    h("div", { class: "inline" }, viewSelect, cron, timezone, overlap, h("button", { id: "job-create-submit", type: "submit" }, "Create")),
    h("p", { class: "hint" }, "Five fields (minute hour day month weekday), six with leading seconds, or @hourly, @daily, ..."));
  fill(main, h("div", {},
    h("div", { class: "card" }, h("h2", {}, "Jobs"),
      h("table", { class: "rows" }, h("thead", {}, h("tr", {}, ["view", "crontab", "time zone", "state", "next run", "last run"].map((c) => h("th", {}, c)))), list)),
    create, detail));
  const [jobs, views] = await Promise.all([attempt(() => api.get("/jobs/")), attempt(() => api.get("/views/"))]);
  if (views) fill(viewSelect, views.map((v) => h("option", { value: v.view_name }, v.view_name)));
  if (!jobs) return;
  fill(list, jobs.map((j) => h("tr", { class: j.job_id === selected ? "current" : null },
    h("td", {}, h("a", { href: `#jobs/${j.job_id}` }, j.view_name)),
    h("td", {}, j.crontab_def), h("td", {}, j.timezone), h("td", {}, j.paused ? "paused" : "active"),
    h("td", {}, j.next_run_at || "-"), h("td", {}, j.last_run ? j.last_run.status : "-"))));
  if (!selected) return;
  const job = jobs.find((j) => j.job_id === selected);
  if (!job) return say("No such job.");
  viewSelect.value = job.view_name;
  const state = h("span", { id: "job-state" });
  const toggle = h("button", { id: "job-toggle", type: "button" });
  const runs = h("tbody", { id: "job-runs" });
  let paused = job.paused;
  const drawState = () => {
    fill(state, paused ? "paused" : "active");
    fill(toggle, paused ? "Resume" : "Pause");
  };
  drawState();
  toggle.addEventListener("click", async () => {
    const updated = await attempt(() => api.call("PATCH", `/jobs/${selected}/`, { json: { paused: !paused } }));
    if (!updated) return;
    paused = updated.paused;
    drawState();
  });
  const loadRuns = async () => {
    const body = await attempt(() => api.get(`/jobs/${selected}/runs/?limit=20`));
    if (!body) return;
    fill(runs, body.runs.map((r) => h("tr", { class: `run-${r.status}` },
      h("td", {}, r.scheduled_for), h("td", { class: "run-status" }, r.status),
      h("td", {}, secondsBetween(r.scheduled_for, r.started_at)),
      h("td", {}, r.duration_ms === null ? "" : `${r.duration_ms} ms`),
      h("td", {}, String(r.attempts)), h("td", {}, r.row_count === null ? "" : String(r.row_count)),
      h("td", {}, r.error || ""))));
  };
  fill(detail, h("div", { class: "card" },
    h("h2", {}, `Job on ${job.view_name}: ${job.crontab_def} (${job.timezone})`),
    h("div", { class: "inline" }, state, toggle, h("button", { type: "button", class: "secondary", onclick: loadRuns }, "Reload runs")),
    h("table", { class: "rows" },
      h("thead", {}, h("tr", {}, ["scheduled for", "status", "lag", "duration", "attempts", "rows", "error"].map((c) => h("th", {}, c)))),
      runs)));
  await loadRuns();
  const timer = setInterval(loadRuns, 3000);
  leave = () => clearInterval(timer);
}

// ---------------------------------------------------------------- live

async function showLive(selected) {
  const list = h("ul", { id: "channel-list", class: "list" });
  const detail = h("div", { id: "live-detail" });
  const viewSelect = h("select", { id: "channel-view", "aria-label": "view" });
  const create = h("form", { id: "channel-create", class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    const channel = await attempt(() => api.post("/channels/create/", { view_name: viewSelect.value }));
    if (!channel) return;
    go(`#live/${channel.channel_id}`);
  } }, viewSelect, h("button", { id: "channel-create-submit", type: "submit" }, "New channel"));
  fill(main, h("div", { class: "split" },
    h("aside", {}, h("h2", {}, "Channels"), list, create),
    detail));
  const [channels, views] = await Promise.all([attempt(() => api.get("/channels/")), attempt(() => api.get("/views/"))]);
  if (views) fill(viewSelect, views.map((v) => h("option", { value: v.view_name }, v.view_name)));
  if (!channels) return;
  fill(list, channels.length ? channels.map((c) => h("li", {},
    h("a", { href: `#live/${c.channel_id}`, class: c.channel_id === selected ? "current" : null }, c.view_name),
    h("span", { class: "hint" }, ` ${c.channel_id.slice(0, 8)}`))) : h("li", { class: "hint" }, "No channels yet."));
  const channel = channels.find((c) => c.channel_id === selected);
  if (!channel) {
    fill(detail, h("p", { class: "hint" }, "Choose a channel, or create one on a view: its refresh events show here as they happen."));
    return;
  }
  const status = h("span", { id: "live-status", class: "state-connecting" }, "connecting");
  const count = h("span", { id: "live-count" }, "0 events");
  const events = h("ol", { id: "live-events", reversed: true });
  let shown = 0;
  // The last few events already sent, then everything new.
  const after = Math.max(0, channel.last_event_id - 10);
  const live = new LiveChannel(api, channel.channel_id, after, {
    onEvent(id, data) {
      shown += 1;
      fill(count, `${shown} events`);
      events.prepend(h("li", { class: "event", dataset: { eventId: String(id) } },
        h("span", { class: "event-id" }, `#${id}`),
        h("span", { class: "event-view" }, data.view_name ?? ""),
        h("span", { class: "event-time" }, data.refreshed_at ?? ""),
        h("span", {}, `${data.row_count ?? "?"} rows`),
        h("span", {}, `${data.duration_ms ?? "?"} ms`),
        h("span", { class: "hint" }, data.job_id ? "by its job" : "manual refresh")));
    },
    onStatus(state, why, opens) {
      status.className = `state-${state}`;
      status.dataset.opens = String(opens);
      fill(status, why ? `${state}: ${why}` : state);
    },
    onReset(id) {
      say(`Some events were deleted by retention before they could be shown; going on from #${id}.`, "info");
    },
    onSignedOut() {
      api.forget();
    },
  });
  fill(detail, h("div", { class: "card live" },
    h("h2", {}, `Live: ${channel.view_name}`),
    h("p", { class: "inline" }, status, count, h("span", { class: "hint" }, `channel ${channel.channel_id}`)),
    events));
  live.start();
  leave = () => live.stop();
}

showLogin();
