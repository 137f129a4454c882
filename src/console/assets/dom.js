// Building the page with DOM calls only. Tenant data (row values, names, SQL, error details)
// always becomes a text node: nothing here parses a string as HTML, and the page's
// Content-Security-Policy (Trusted Types with no policy) makes the browser refuse every HTML
// sink that takes a string.

/** An element: `attrs` are attributes (`on*` functions become listeners, `dataset` an object);
 *  children are nodes, strings (as text), or arrays of them; null and false are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" || key === "checked" || key === "disabled" || key === "hidden") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(visible(String(child))));
  }
}

/** Control and format characters (bidirectional overrides and isolates, zero-width and
 *  invisible characters, tags, line separators) shown as `\u{202e}`-style text, so tenant
 *  text cannot reorder or hide what is around it. Newlines and tabs stay (SQL is multi-line).
 *  Every string child of `h` and `fill` goes through it. */
export function visible(text) {
  return text.replace(/[^\P{Cc}\n\t]|[\p{Cf}\u2028\u2029]/gu, (c) => `\\u{${c.codePointAt(0).toString(16)}}`);
}

/** Replaces `el`'s children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** How a cell shows a JSON value: text, with null marked and objects as JSON. */
export function cellText(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A table of `rows` (objects) with the given column names. */
export function rowsTable(columns, rows) {
  return h("table", { class: "rows" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => {
      const value = row[c];
      return h("td", { class: value === null ? "null" : null }, cellText(value));
    })))));
}

/** A problem answer (or any error) as one line of text. */
export function errorText(err) {
  if (err && err.problem) {
    const p = err.problem;
    return `${p.detail || p.title || "error"}${p.code ? ` (${p.code})` : ""}`;
  }
  return err && err.message ? err.message : String(err);
}

/** Seconds between two RFC 3339 times, as text ("" when one is missing). */
export function secondsBetween(from, to) {
  if (!from || !to) return "";
  const s = (Date.parse(to) - Date.parse(from)) / 1000;
  return Number.isFinite(s) ? `${s.toFixed(2)} s` : "";
}

/** A byte count for people. */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
