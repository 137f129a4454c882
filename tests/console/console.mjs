// Drives the browser console (/console/) in Debian's Chromium through playwright-core (no browser
// download). Run by tests/api/console.rs, which starts the server and restarts it when asked:
//
//   node tests/console/console.mjs BASE_URL --email E --password P --parquet sample.parquet \
//       --shots DIR [--doc-shot docs/console-live.png]
//
// Protocol on stdout: a line `RESTART` asks the caller to stop the server and start it again on
// the same port; the caller answers `RESTARTED` on stdin. The last line is `REPORT {json}`:
// what the page showed, for the caller to assert on. Progress goes to stderr.

import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import path from "node:path";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const [base, ...rest] = process.argv.slice(2);
const args = {};
for (let i = 0; i < rest.length; i += 2) args[rest[i].replace(/^--/, "")] = rest[i + 1];
if (!base || !args.email || !args.password || !args.parquet || !args.shots) {
  console.error("usage: console.mjs BASE_URL --email E --password P --parquet FILE --shots DIR [--doc-shot FILE]");
  process.exit(1);
}
const origin = new URL(base).origin;
const XSS = `<img src=x onerror="window.__xss=1">`;
const VIEW_SQL = "SELECT record_type, count(*) AS calls, now() AS refreshed_at, '<b>bold</b>' AS label\nFROM calls GROUP BY record_type";
const t0 = Date.now();
const report = { steps: [], page_errors: [], csp_violations: [], foreign_requests: [], screenshots: {} };

const log = (...a) => console.error(`[console ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
function step(name, extra = {}) {
  log(name);
  report.steps.push({ name, at_ms: Date.now() - t0, ...extra });
}

// ------------------------------------------------------------------ the caller's channel

const stdin = createInterface({ input: process.stdin });
const lines = [];
let waiting = null;
stdin.on("line", (line) => {
  if (waiting) {
    const w = waiting;
    waiting = null;
    w(line);
  } else {
    lines.push(line);
  }
});
function nextLine(timeoutMs) {
  if (lines.length) return Promise.resolve(lines.shift());
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no answer from the caller")), timeoutMs);
    waiting = (line) => {
      clearTimeout(timer);
      resolve(line);
    };
  });
}

// ------------------------------------------------------------------ the API, beside the page

/** A fresh access token of the test's own session (the access TTL is short in the test). */
async function token() {
  const res = await fetch(`${base}/auth/tokens/obtain/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ primary_email: args.email, password: args.password }),
  });
  if (!res.ok) throw new Error(`obtain: ${res.status} ${await res.text()}`);
  return (await res.json()).access;
}

async function apiCall(method, p, body) {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { Authorization: `Bearer ${await token()}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// ------------------------------------------------------------------ screenshots

/** Saves a screenshot and says how far from blank it is: its distinct colours and the share of
 *  the most common one. */
async function shot(page, name, options = {}) {
  const file = path.join(args.shots, `${name}.png`);
  const buffer = await page.screenshot({ path: file, ...options });
  const png = PNG.sync.read(buffer);
  const counts = new Map();
  for (let i = 0; i < png.data.length; i += 4) {
    const key = (png.data[i] << 16) | (png.data[i + 1] << 8) | png.data[i + 2];
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  const pixels = png.width * png.height;
  const dominant = Math.max(...counts.values()) / pixels;
  report.screenshots[name] = { file, width: png.width, height: png.height, distinct_colors: counts.size, dominant_share: dominant };
  log(`screenshot ${name}: ${png.width}x${png.height}, ${counts.size} colours, dominant ${(dominant * 100).toFixed(1)}%`);
  return buffer;
}

// ------------------------------------------------------------------ page helpers

const texts = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));

async function waitText(page, selector, pattern, timeout = 30000) {
  await page.waitForFunction(([s, p]) => {
    const el = document.querySelector(s);
    return el && new RegExp(p).test(el.textContent);
  }, [selector, pattern.source], { timeout });
}

/** The values of column `name` in the first rows table under `scope`. */
function columnValues(page, scope, name) {
  return page.$$eval(`${scope} table.rows`, (tables, n) => {
    const table = tables[0];
    if (!table) return [];
    const at = [...table.querySelectorAll("thead th")].findIndex((th) => th.textContent === n);
    return [...table.querySelectorAll("tbody tr")].map((tr) => tr.children[at].textContent);
  }, name);
}

async function filter(page, scope, column, op, value) {
  await page.selectOption(`${scope} .filter-column`, column);
  await page.selectOption(`${scope} .filter-op`, op);
  await page.fill(`${scope} .filter-value`, value);
  await page.click(`${scope} .filter-add`);
}

async function eventIds(page) {
  return (await page.$$eval("#live-events .event", (els) => els.map((e) => Number(e.dataset.eventId)))).reverse();
}

// ------------------------------------------------------------------ the run

let page = null;

async function run() {
  mkdirSync(args.shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking", "--disable-component-update"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1180, height: 640 }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.setDefaultTimeout(30000);
    await page.addInitScript(() => {
      window.__csp = [];
      document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    page.on("pageerror", (e) => report.page_errors.push(String(e)));
    page.on("console", (m) => {
      if (/Content Security Policy|Trusted Type|TrustedHTML/i.test(m.text())) report.csp_violations.push(m.text());
    });
    page.on("request", (r) => {
      const url = new URL(r.url());
      if (url.origin !== origin && url.protocol !== "data:") report.foreign_requests.push(r.url());
    });

    // The bare path redirects to the index, which loads without a token.
    await page.goto(`${base}/console`);
    report.url_after_redirect = page.url();
    step("opened the console", { url: page.url() });

    // Register and log in.
    await page.fill("#login-email", args.email);
    await page.fill("#login-password", args.password);
    await page.click("#register-submit");
    await page.waitForSelector("#nav:not([hidden])");
    report.signed_in_as = await page.textContent("#who");
    step("registered and logged in");

    // Upload sample.parquet with a progress bar, then its rows.
    await page.setInputFiles("#upload-file", args.parquet);
    await page.fill("#upload-name", "calls");
    await page.click("#upload-submit");
    await waitText(page, "#upload-progress-text", /^done:/, 60000);
    report.upload = {
      text: await page.textContent("#upload-progress-text"),
      progress: await page.$eval("#upload-progress", (p) => ({ value: p.value, max: p.max, events: Number(p.dataset.events) })),
      file_bytes: readFileSync(args.parquet).length,
    };
    await waitText(page, "#table-name", /^calls$/);
    await page.waitForSelector("#table-detail table.rows tbody tr");
    report.table = {
      summary: await page.textContent("#table-summary"),
      rows_shown: (await page.$$("#table-detail table.rows tbody tr")).length,
      headers: await texts(page, "#table-detail table.rows thead th"),
    };
    step("uploaded sample.parquet and saw its rows", report.table);
    await shot(page, "tables");

    // A filter, then the next page.
    await filter(page, "#table-detail", "record_type", "eq", "end");
    await waitText(page, "#table-detail .rows-status", /^page 1/);
    await page.waitForFunction(() => document.querySelectorAll("#table-detail .chip").length === 1);
    await page.waitForTimeout(300);
    const firstPage = await columnValues(page, "#table-detail", "record_id");
    report.filter = { record_types: [...new Set(await columnValues(page, "#table-detail", "record_type"))] };
    await page.click("#table-detail .rows-next");
    await waitText(page, "#table-detail .rows-status", /^page 2/);
    const secondPage = await columnValues(page, "#table-detail", "record_id");
    report.filter.second_page_types = [...new Set(await columnValues(page, "#table-detail", "record_type"))];
    report.filter.pages_overlap = firstPage.some((id) => secondPage.includes(id));
    report.filter.page_sizes = [firstPage.length, secondPage.length];
    await page.click("#table-detail .chip-remove");
    step("filtered and paged", report.filter);

    // A row whose value is markup: shown as text, never run.
    await apiCall("POST", "/tables/calls/rows/", [{ record_id: 6001, record_type: "start", record_timestamp: "2026-03-01T10:00:00Z", call_id: 3001, source: XSS, destination: "2188888888" }]);
    await filter(page, "#table-detail", "record_id", "eq", "6001");
    await page.waitForFunction(() => document.querySelectorAll("#table-detail table.rows tbody tr").length === 1);
    report.xss = {
      shown: (await columnValues(page, "#table-detail", "source"))[0],
      expected: XSS,
      img_elements: (await page.$$("#table-detail table.rows img")).length,
      ran: await page.evaluate(() => window.__xss !== undefined),
    };
    step("the markup row shows as text", report.xss);

    // A value with a right-to-left override: shown as an escape, not obeyed.
    await apiCall("POST", "/tables/calls/rows/", [{ record_id: 6002, record_type: "start", record_timestamp: "2026-03-01T10:00:00Z", call_id: 3002, source: "\u202Egnp.exe", destination: "2188888888" }]);
    await page.click("#table-detail .chip-remove");
    await page.waitForFunction(() => document.querySelectorAll("#table-detail .chip").length === 0);
    await page.waitForTimeout(300);
    await filter(page, "#table-detail", "record_id", "eq", "6002");
    await page.waitForFunction(() => document.querySelectorAll("#table-detail table.rows tbody tr").length === 1
      && document.querySelector("#table-detail .chip").textContent.includes("6002"));
    report.bidi = { shown: (await columnValues(page, "#table-detail", "source"))[0] };
    step("a bidi override shows as an escape", report.bidi);

    // A view: its SQL, a refresh, its rows.
    await page.click('#nav a[data-section="views"]');
    await page.fill("#view-name", "call_counts");
    await page.fill("#view-sql", VIEW_SQL);
    await page.click("#view-create-submit");
    await waitText(page, "#view-title", /^call_counts$/);
    await page.waitForSelector("#view-detail table.rows tbody tr");
    await page.click("#view-refresh");
    await waitText(page, "#view-last-refresh", /^last refresh: refreshed/);
    // The refresh redraws the rows: wait for the new table (with its label column) to be there.
    await page.waitForFunction(() => {
      const table = document.querySelector("#view-detail table.rows");
      return table && [...table.querySelectorAll("thead th")].some((th) => th.textContent === "label")
        && table.querySelectorAll("tbody tr").length > 0;
    });
    report.view = {
      sql_shown: await page.textContent("#view-sql-text"),
      sql_expected: VIEW_SQL,
      labels: [...new Set(await columnValues(page, "#view-detail", "label"))],
      bold_elements: (await page.$$("#view-detail table.rows b")).length,
      record_types: (await columnValues(page, "#view-detail", "record_type")).sort(),
      last_refresh: await page.textContent("#view-last-refresh"),
    };
    step("created and refreshed a view", report.view);

    // A job every two seconds: its runs, then pause and resume.
    await page.click('#nav a[data-section="jobs"]');
    await page.waitForSelector('#job-view option[value="call_counts"]', { state: "attached" });
    await page.selectOption("#job-view", "call_counts");
    await page.fill("#job-cron", "*/2 * * * * *");
    await page.click("#job-create-submit");
    await waitText(page, "#job-state", /^active$/);
    const jobId = decodeURIComponent(new URL(page.url()).hash.split("/")[1]);
    await page.waitForSelector("#job-runs tr.run-succeeded", { timeout: 45000 });
    report.job_runs = await page.$$eval("#job-runs tr", (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    await shot(page, "jobs");
    await page.click("#job-toggle");
    await waitText(page, "#job-state", /^paused$/);
    report.job_paused_by_the_page = (await apiCall("GET", `/jobs/${jobId}/`)).paused;
    await page.click("#job-toggle");
    await waitText(page, "#job-state", /^active$/);
    report.job_resumed_by_the_page = !(await apiCall("GET", `/jobs/${jobId}/`)).paused;
    step("created a job, saw its runs, paused and resumed it", { runs: report.job_runs.length });

    // A malformed address while the job's runs are polled: "not found", no uncaught error,
    // and the poller stopped.
    let jobPolls = 0;
    const countPolls = (r) => { if (new URL(r.url()).pathname.startsWith("/jobs/")) jobPolls += 1; };
    page.on("request", countPolls);
    await page.evaluate(() => { location.hash = "#tables/%"; });
    await waitText(page, "#notice", /Not found/);
    const pollsAtLeave = jobPolls;
    await page.waitForTimeout(4000);
    report.malformed_hash = { notice: await page.textContent("#notice"), polls_after: jobPolls - pollsAtLeave };
    page.off("request", countPolls);
    step("a malformed address shows not found", report.malformed_hash);

    // The live view of a new channel on the view: the job's events, then one of the test's.
    await page.click('#nav a[data-section="live"]');
    await page.waitForSelector('#channel-view option[value="call_counts"]', { state: "attached" });
    await page.click("#channel-create-submit");
    await page.waitForSelector("#live-status.state-live");
    const channelId = decodeURIComponent(new URL(page.url()).hash.split("/")[1]);
    report.channel_id = channelId;
    await page.waitForFunction(() => document.querySelectorAll("#live-events .event").length >= 3, null, { timeout: 30000 });
    // No more job events from here on: the ids the test expects are its own.
    await apiCall("PATCH", `/jobs/${jobId}/`, { paused: true });
    await page.waitForTimeout(1500);
    await apiCall("POST", "/views/call_counts/refresh/");
    const first = (await apiCall("GET", `/channels/${channelId}/`)).last_event_id;
    await page.waitForSelector(`#live-events .event[data-event-id="${first}"]`);
    report.live_before_restart = { ids: await eventIds(page), manual_event: first };
    step("events arrived in the live view", report.live_before_restart);
    await page.waitForTimeout(300);
    await shot(page, "live");
    if (args["doc-shot"]) {
      await page.screenshot({ path: args["doc-shot"], clip: { x: 0, y: 0, width: 1180, height: 420 } });
    }

    // The access token in the stream's URL expires (TTL 20 s in the test): the page renews it
    // and opens a new stream.
    await page.waitForFunction(() => Number(document.querySelector("#live-status").dataset.opens) >= 2 && document.querySelector("#live-status").className === "state-live", null, { timeout: 40000 });
    report.opens_before_restart = Number(await page.$eval("#live-status", (s) => s.dataset.opens));
    step("the stream was renewed after its token expired", { opens: report.opens_before_restart });

    // The server restarts.
    console.log("RESTART");
    const statesDuringRestart = new Set();
    const watch = setInterval(async () => {
      try {
        statesDuringRestart.add(await page.$eval("#live-status", (s) => s.className));
      } catch (_) { /* the page is busy */ }
    }, 200);
    const answer = await nextLine(120000);
    if (answer !== "RESTARTED") throw new Error(`the caller answered ${answer}`);
    step("the server was restarted");
    await page.waitForSelector("#live-status.state-live", { timeout: 60000 });
    clearInterval(watch);
    report.states_during_restart = [...statesDuringRestart];
    await apiCall("POST", "/views/call_counts/refresh/");
    const after = (await apiCall("GET", `/channels/${channelId}/`)).last_event_id;
    await page.waitForSelector(`#live-events .event[data-event-id="${after}"]`, { timeout: 30000 });
    // Time for a duplicate to show up, were the page to show one.
    await page.waitForTimeout(2500);
    report.live_after_restart = {
      event: after,
      ids: await eventIds(page),
      count_text: await page.textContent("#live-count"),
      status: await page.textContent("#live-status"),
      opens: Number(await page.$eval("#live-status", (s) => s.dataset.opens)),
      last_event_id_on_server: (await apiCall("GET", `/channels/${channelId}/`)).last_event_id,
    };
    step("the next event arrived once after the restart", report.live_after_restart);
    await shot(page, "live-after-restart");
    report.csp_violations.push(...(await page.evaluate(() => window.__csp)));
  } catch (err) {
    // What the page showed when a step failed.
    try {
      report.failure_notice = await page.textContent("#notice");
      report.failure_url = page.url();
      await page.screenshot({ path: path.join(args.shots, "failure.png") });
    } catch (_) { /* nothing more to say */ }
    throw err;
  } finally {
    await browser.close();
  }
}

try {
  await run();
  report.ok = true;
} catch (err) {
  report.ok = false;
  report.error = String(err && err.stack ? err.stack : err);
  log("failed:", report.error);
}
report.total_ms = Date.now() - t0;
console.log(`REPORT ${JSON.stringify(report)}`);
stdin.close();
process.exit(0);
