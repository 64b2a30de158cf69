// The status page (exporter/web/pages.py inlines this file). It renders the
// data embedded in the page, then fetches api/v1/status and api/v1/targets
// every few seconds (?refresh=N, default 5; 0 stops) and renders again,
// without reloading. Every vendor or config string goes into the DOM as
// text (textContent), never as markup.
"use strict";
(function () {
  const MAX_ROWS = 500;
  const params = new URLSearchParams(location.search);
  const asked = params.has("refresh") ? Number(params.get("refresh")) : 5;
  const period = Number.isFinite(asked) && asked > 0 ? Math.max(1, asked) * 1000 : 0;
  const initial = JSON.parse(document.getElementById("initial").textContent);
  const state = { summary: initial.summary, targets: initial.targets, at: Date.now(), error: null, refreshes: 0 };
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // --- times: relative to the server's clock, which the summary carries -----
  function serverNow() {
    return state.summary.now + (Date.now() - state.at) / 1000;
  }
  function span(seconds) {
    const s = Math.abs(seconds);
    if (s < 1) return "<1s";
    if (s < 90) return Math.round(s) + "s";
    if (s < 5400) return Math.round(s / 60) + "m";
    if (s < 129600) return Math.round(s / 3600) + "h";
    return Math.round(s / 86400) + "d";
  }
  function relative(ts) {
    if (ts === null || ts === undefined) return "never";
    const delta = ts - serverNow();
    if (Math.abs(delta) < 1) return "now";
    return delta > 0 ? "in " + span(delta) : span(delta) + " ago";
  }
  function iso(ts) {
    return ts === null || ts === undefined ? "" : new Date(ts * 1000).toISOString().replace(".000Z", "Z");
  }
  function when(ts, className) {
    const node = el("span", className || "", relative(ts));
    if (ts !== null && ts !== undefined) {
      node.dataset.ts = String(ts);
      node.title = iso(ts);
    }
    return node;
  }
  function tick() {
    for (const node of document.querySelectorAll("[data-ts]")) {
      node.textContent = relative(Number(node.dataset.ts));
    }
  }
  function seconds(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? value.toFixed(2) + "s" : span(value);
  }

  // --- the summary -----------------------------------------------------------
  function card(id, title, tone) {
    const node = $(id);
    node.replaceChildren(el("h2", "", title));
    node.className = "card" + (tone ? " " + tone : "");
    return node;
  }
  function line(...parts) {
    const p = el("p");
    for (const part of parts) p.append(typeof part === "string" ? document.createTextNode(part) : part);
    return p;
  }
  function renderSummary() {
    const s = state.summary;
    $("version").textContent = s.version;
    const c = s.targets;
    const counts = el("p", "counts");
    for (const [key, label] of [["up", "up"], ["down", "down"], ["pending", "pending"], ["warning", "with warnings"]]) {
      const item = el("span", "count-" + key);
      item.append(el("b", "n-" + key, c[key]), document.createTextNode(" " + label));
      counts.append(item);
    }
    card("card-targets", c.total + " target" + (c.total === 1 ? "" : "s"), c.down ? "bad" : c.warning ? "warn" : "")
      .append(counts);

    const r = s.reload;
    const config = card("card-config", "Config", r.successful ? "" : "bad");
    if (r.successful) {
      config.append(line(el("b", "n-up", "loaded"), " ", when(r.timestamp)));
    } else {
      config.append(line(el("b", "n-down", "reload failed"), " ", when(r.timestamp)));
      config.append(el("p", "mono error", r.error));
      config.append(line(el("span", "muted", "running the config loaded "), when(r.last_success_timestamp, "muted")));
    }

    const o = s.otlp;
    const otlp = card("card-otlp", "OTLP", o && o.state === "failing" ? "bad" : "");
    if (!o) {
      otlp.append(line(el("span", "muted", "off")));
    } else {
      otlp.append(line(el("b", o.state === "ok" ? "n-up" : "n-down", o.state === "ok" ? "exporting" : "failing"),
        o.failing_reason ? " (" + o.failing_reason + ")" : "", " to ", el("span", "endpoint", o.endpoint),
        " ", el("span", "muted", o.protocol)));
      otlp.append(line("queue " + o.queued_points.toLocaleString("en") + " / " + o.max_queue_points.toLocaleString("en") +
        " points · dropped " + o.dropped_points.toLocaleString("en")));
      otlp.append(line(el("span", "muted", "last export "), when(o.last_success_timestamp, "muted")));
    }

    const shard = card("card-shard", "Shard");
    shard.append(line(el("b", "", s.shard.index), " of " + s.shard.total));
    shard.append(line(el("span", "muted", "up since "), when(s.started_timestamp, "muted")));
  }

  // --- the targets -----------------------------------------------------------
  function tone(t) {
    if (t.health === "down") return "down";
    if (t.warnings.length) return "warning";
    return t.health;
  }
  function cell(className, label, ...content) {
    const td = el("td", className);
    if (label) td.dataset.label = label;
    td.append(...content);
    return td;
  }
  function problem(t) {
    const td = cell("problem", "");
    if (t.health === "down") {
      td.append(el("span", "reason", t.reason), document.createTextNode(": "), el("span", "error", t.last_error || ""));
    }
    if (t.warnings.length) {
      const list = el("ul");
      for (const w of t.warnings) {
        const item = el("li", "", w.kind + (w.count > 1 ? " ×" + w.count : "") + ": ");
        item.append(el("span", "", w.message));
        list.append(item);
      }
      td.append(list);
    }
    return td;
  }
  function row(t) {
    const tr = el("tr", tone(t));
    tr.dataset.source = t.source;
    tr.dataset.target = t.target;
    tr.dataset.health = t.health;
    const health = cell("health", "", el("span", "badge " + t.health, t.health));
    if (t.warnings.length) health.append(el("span", "badge warning", "⚠ " + t.warnings.length));
    if (t.polling) health.append(el("span", "sub", "polling…"));
    const source = cell("source", "source", el("span", "", t.source), el("span", "sub", t.type + " · "));
    source.lastChild.append(el("span", "endpoint", t.endpoint));
    tr.append(
      health,
      source,
      cell("target", "target", t.target),
      cell("time last", "last poll", when(t.last_poll_timestamp), el("span", "sub", "every " + span(t.interval_seconds))),
      cell("num duration", "duration", seconds(t.last_duration_seconds)),
      cell("time next", "next poll", t.next_poll_timestamp === null ? el("span", "muted", "–") : when(t.next_poll_timestamp)),
      cell("num series", "series", t.series.toLocaleString("en")),
      problem(t),
    );
    return tr;
  }
  function matches(t, words, show) {
    if (show === "problems" && t.health !== "down" && !t.warnings.length) return false;
    if (show === "warning" && !t.warnings.length) return false;
    if (["up", "down", "pending"].includes(show) && t.health !== show) return false;
    if (!words.length) return true;
    const text = [t.source, t.type, t.target, t.endpoint, t.health, t.reason || "", t.last_error || "",
      ...t.warnings.map((w) => w.kind + " " + w.message)].join("\n").toLowerCase();
    return words.every((word) => text.includes(word));
  }
  function renderTargets() {
    const words = $("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    const show = $("show").value;
    const shown = state.targets.filter((t) => matches(t, words, show));
    $("rows").replaceChildren(...shown.slice(0, MAX_ROWS).map(row));
    $("empty").hidden = shown.length > 0;
    $("more").hidden = shown.length <= MAX_ROWS;
    $("more").textContent = "Showing the first " + MAX_ROWS + " of " + shown.length + " targets: narrow the filter.";
    $("shown").textContent = shown.length === state.targets.length ? "" : shown.length + " of " + state.targets.length + " shown";
  }
  function renderStatus() {
    const node = $("refresh-state");
    node.className = state.error ? "stale" : "";
    const parts = state.error ? ["could not refresh (" + state.error + "): data from "] : ["updated "];
    node.replaceChildren(document.createTextNode(parts[0]), el("span", "", relative(state.summary.now)));
    node.lastChild.dataset.ts = String(state.summary.now);
    node.append(period ? " · every " + period / 1000 + "s" : " · auto-refresh off");
  }
  function render() {
    renderSummary();
    renderTargets();
    renderStatus();
  }

  // --- filter state in the address (#q=…&show=…), so a filtered view can be shared
  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    $("filter").value = h.get("q") || "";
    const show = h.get("show");
    if (show && [...$("show").options].some((o) => o.value === show)) $("show").value = show;
  }
  function writeHash() {
    const h = new URLSearchParams();
    if ($("filter").value) h.set("q", $("filter").value);
    if ($("show").value !== "all") h.set("show", $("show").value);
    const text = h.toString();
    history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
  }

  // --- refresh ---------------------------------------------------------------
  async function get(path) {
    // Relative to the page (a reverse proxy may serve it under a prefix), but
    // without the user:password@ an address may carry, which fetch() refuses.
    const url = new URL(path, location.origin + location.pathname);
    const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }
  async function refresh() {
    try {
      const [summary, targets] = await Promise.all([get("api/v1/status"), get("api/v1/targets")]);
      Object.assign(state, { summary, targets, at: Date.now(), error: null });
      state.refreshes += 1;
    } catch (error) {
      state.error = error instanceof Error ? error.message : String(error);
    }
    render();
    document.body.dataset.refreshes = String(state.refreshes);
  }
  async function loop() {
    if (!document.hidden) await refresh();
    setTimeout(loop, period);
  }

  readHash();
  render();
  for (const [id, event] of [["filter", "input"], ["show", "change"]]) {
    $(id).addEventListener(event, () => { writeHash(); renderTargets(); });
  }
  window.addEventListener("hashchange", () => { readHash(); renderTargets(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden && period) refresh(); });
  setInterval(tick, 1000);
  if (period) setTimeout(loop, period);
})();
