// np-server's dashboard: polls the JSON API of the endpoint that served it (docs/api-admin.md)
// and draws it. Plain DOM and <canvas>, no framework, nothing from the network. Every value that
// comes from a client (names, addresses) goes in as text, never as markup.
"use strict";

(function () {
  const POLL_MS = 1000;
  const HISTORY = 60; // samples per graph: a minute at one a second, 4 px each
  const TOKEN_KEY = "natproxy-admin-token";
  const $ = (id) => document.getElementById(id);

  // The Bearer token, when the API wants one (a Basic login is the browser's business). A token in
  // the address's fragment (#token=..., which no request carries) moves into this tab's storage
  // and out of the address bar and its history entry.
  let token = sessionStorage.getItem(TOKEN_KEY);
  const fragment = /^#token=(.+)$/.exec(location.hash);
  if (fragment) {
    token = decodeURIComponent(fragment[1]);
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }

  // Per proxy ("client/proxy"): the last counters seen and the rates computed from them.
  const series = new Map();
  let timer = null;
  let polls = 0; // answered ones, on <body data-polls> for whoever reads the page (tests)

  class HttpError extends Error {
    constructor(status, message, retry, scheme) {
      super(message);
      this.status = status;
      this.retry = retry;
      this.scheme = scheme;
    }
  }

  async function get(path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    // Relative to the page (an operator's reverse proxy may serve it under a prefix), without the
    // user:password@ a page opened with one carries: fetch refuses those, and the browser sends
    // the Basic credentials it logged in with by itself.
    const url = new URL(path, location.href);
    url.username = "";
    url.password = "";
    const r = await fetch(url, { headers, cache: "no-store", credentials: "same-origin" });
    if (!r.ok) {
      let message = r.status + " " + r.statusText;
      try {
        message = (await r.json()).error || message;
      } catch (e) {
        // not JSON: the status says enough
      }
      throw new HttpError(r.status, message, Number(r.headers.get("Retry-After")) || 0,
        (r.headers.get("WWW-Authenticate") || "").split(" ")[0]);
    }
    return r.json();
  }

  // ---- formatting -------------------------------------------------------------------------------

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
  }

  function rate(n) {
    return bytes(Math.round(n)) + "/s";
  }

  function duration(ms) {
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    s %= 60;
    const two = (x) => String(x).padStart(2, "0");
    if (d > 0) return d + "d " + two(h) + "h";
    if (h > 0) return h + "h " + two(m) + "m";
    if (m > 0) return m + "m " + two(s) + "s";
    return s + "s";
  }

  function clock(unixMs) {
    const t = new Date(unixMs);
    const today = new Date().toDateString() === t.toDateString();
    return (today ? "" : t.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " ") +
      t.toLocaleTimeString(undefined, { hour12: false });
  }

  // ---- DOM helpers ------------------------------------------------------------------------------

  // A cell: text shown, and (key, value) as data-key/data-value for scripts and tests to read.
  function cell(text, key, value, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (key !== undefined) {
      td.dataset.key = key;
      td.dataset.value = String(value);
    }
    if (cls) td.className = cls;
    return td;
  }

  function emptyRow(tbody, columns, text) {
    const tr = document.createElement("tr");
    const td = cell(text, undefined, undefined, "empty");
    td.colSpan = columns;
    tr.appendChild(td);
    tbody.appendChild(tr);
  }

  function setTile(id, text, value, title) {
    const el = $(id);
    el.textContent = text;
    el.dataset.value = String(value);
    el.title = title || "";
  }

  // ---- the traffic graph ------------------------------------------------------------------------

  // Rates between two polls, from the server's own clock (its uptime), so a slow fetch or a
  // throttled background tab does not bend them.
  function sample(key, t, st) {
    let s = series.get(key);
    if (s === undefined) {
      s = { rates: [] };
      series.set(key, s);
    }
    if (s.last !== undefined && t > s.last.t && st.bytes_in >= s.last.in && st.bytes_out >= s.last.out) {
      const dt = (t - s.last.t) / 1000;
      s.rates.push([(st.bytes_in - s.last.in) / dt, (st.bytes_out - s.last.out) / dt]);
      if (s.rates.length > HISTORY) s.rates.shift();
    }
    s.last = { t, in: st.bytes_in, out: st.bytes_out };
    s.seen = t;
    return s;
  }

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function graph(s) {
    const w = 240, h = 44, dpr = window.devicePixelRatio || 1;
    const c = document.createElement("canvas");
    c.width = w * dpr;
    c.height = h * dpr;
    c.className = "graph";
    const g = c.getContext("2d");
    g.scale(dpr, dpr);
    g.fillStyle = css("--graph-bg");
    g.fillRect(0, 0, w, h);
    const rates = s.rates;
    let max = 0;
    for (const [a, b] of rates) max = Math.max(max, a, b);
    c.setAttribute("role", "img");
    c.dataset.samples = String(rates.length);
    if (rates.length < 2) {
      g.fillStyle = css("--muted");
      g.font = "11px system-ui, sans-serif";
      g.fillText("collecting\u2026", 6, h / 2 + 4);
      c.setAttribute("aria-label", "no traffic history yet");
      return c;
    }
    const top = max > 0 ? max * 1.15 : 1;
    const x = (i) => w - (rates.length - 1 - i) * (w / (HISTORY - 1));
    const y = (v) => h - 1 - (v / top) * (h - 12);
    // in: a filled area; out: a line over it
    g.beginPath();
    g.moveTo(x(0), h);
    rates.forEach((r, i) => g.lineTo(x(i), y(r[0])));
    g.lineTo(x(rates.length - 1), h);
    g.closePath();
    g.fillStyle = css("--in-fill");
    g.fill();
    g.beginPath();
    rates.forEach((r, i) => (i ? g.lineTo(x(i), y(r[0])) : g.moveTo(x(i), y(r[0]))));
    g.strokeStyle = css("--in");
    g.lineWidth = 1.5;
    g.stroke();
    g.beginPath();
    rates.forEach((r, i) => (i ? g.lineTo(x(i), y(r[1])) : g.moveTo(x(i), y(r[1]))));
    g.strokeStyle = css("--out");
    g.stroke();
    g.fillStyle = css("--muted");
    g.font = "10px system-ui, sans-serif";
    g.fillText(max > 0 ? "max " + rate(max) : "no traffic", 4, 10);
    const [rin, rout] = rates[rates.length - 1];
    c.setAttribute("aria-label", "in " + rate(rin) + ", out " + rate(rout));
    return c;
  }

  // ---- rendering --------------------------------------------------------------------------------

  function renderClients(clients, now) {
    const tbody = $("clients").tBodies[0];
    tbody.replaceChildren();
    if (clients.length === 0) emptyRow(tbody, 8, "No client is logged in.");
    for (const c of clients) {
      const tr = document.createElement("tr");
      tr.dataset.client = c.name;
      const active = c.stats.visitors_active;
      tr.append(
        cell(c.name, "name", c.name, "name"),
        cell(c.addr, "addr", c.addr, "mono"),
        cell(clock(now - c.uptime_ms), "login_unix_ms", now - c.uptime_ms),
        cell(duration(c.uptime_ms), "uptime_ms", c.uptime_ms, "num"),
        cell(String(c.proxies.length), "proxies", c.proxies.length, "num"),
        cell(String(active), "visitors_active", active, "num"),
        cell(bytes(c.stats.bytes_in), "bytes_in", c.stats.bytes_in, "num"),
        cell(bytes(c.stats.bytes_out), "bytes_out", c.stats.bytes_out, "num"));
      tbody.appendChild(tr);
    }
  }

  function renderProxies(clients, t) {
    const tbody = $("proxies").tBodies[0];
    tbody.replaceChildren();
    let n = 0;
    for (const c of clients) {
      const proxies = [...c.proxies].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const p of proxies) {
        const s = sample(c.name + "/" + p.name, t, p.stats);
        const st = p.stats;
        const tr = document.createElement("tr");
        tr.dataset.client = c.name;
        tr.dataset.proxy = p.name;
        const visitors = cell(String(st.visitors), "visitors", st.visitors, "num");
        visitors.title = st.visitors_joined + " joined, " + st.visitors_dropped + " dropped, " +
          st.visitors_denied + " turned away (allow_ips)";
        const g = document.createElement("div");
        g.className = "graph-wrap";
        g.appendChild(graph(s));
        const last = s.rates[s.rates.length - 1] || [0, 0];
        const now = document.createElement("span");
        now.className = "rates";
        now.dataset.rateIn = String(Math.round(last[0]));
        now.dataset.rateOut = String(Math.round(last[1]));
        const rin = document.createElement("span");
        rin.className = "in";
        rin.textContent = "\u2193 " + rate(last[0]);
        const rout = document.createElement("span");
        rout.className = "out";
        rout.textContent = "\u2191 " + rate(last[1]);
        now.append(rin, rout);
        g.appendChild(now);
        tr.append(
          cell(c.name, "client", c.name),
          cell(p.name, "name", p.name, "name"),
          cell(p.hosts ? p.type + ": " + p.hosts : p.type, "type", p.type),
          cell(String(p.port), "port", p.port, "num mono"),
          cell(String(st.visitors_active), "visitors_active", st.visitors_active, "num"),
          visitors,
          cell(bytes(st.bytes_in), "bytes_in", st.bytes_in, "num"),
          cell(bytes(st.bytes_out), "bytes_out", st.bytes_out, "num"),
          cell(""));
        tr.lastChild.appendChild(g);
        tbody.appendChild(tr);
        n++;
      }
    }
    if (n === 0) emptyRow(tbody, 9, "No proxy is open.");
    // proxies gone since: their history goes with them
    for (const [key, s] of series) if (s.seen !== t) series.delete(key);
  }

  function renderFails(f) {
    const tbody = $("fails").tBodies[0];
    tbody.replaceChildren();
    if (f.failed.length === 0) emptyRow(tbody, 4, "None since the server started.");
    for (const e of f.failed) {
      const tr = document.createElement("tr");
      tr.dataset.addr = e.addr;
      tr.dataset.name = e.name;
      const when = cell(clock(e.unix_ms), "unix_ms", e.unix_ms);
      when.title = duration(e.ago_ms) + " ago";
      tr.append(when, cell(e.addr, "addr", e.addr, "mono"),
        cell(e.name === "" ? "\u2013" : e.name, "name", e.name, "name"),
        cell(e.reason, "reason", e.reason));
      tbody.appendChild(tr);
    }
    $("fails-note").textContent = f.recorded > f.failed.length
      ? "(the last " + f.failed.length + " of " + f.recorded + ")" : "";
  }

  function render(server, clients, fails) {
    const st = server.stats;
    const now = Date.now();
    let active = 0; // the server keeps no such gauge: its clients' sum
    for (const c of clients) active += c.stats.visitors_active;
    $("version").textContent = server.version;
    document.title = "np-server " + server.version + " \u00b7 " + clients.length + " clients";
    setTile("s-uptime", duration(server.uptime_ms), server.uptime_ms);
    setTile("s-clients", String(st.clients), st.clients);
    setTile("s-proxies", String(st.proxies), st.proxies, "public listeners");
    setTile("s-active", String(active), active, "visitors joined with their client's service");
    setTile("s-pending", String(st.pending), st.pending,
      "visitors waiting for their client's work connection");
    setTile("s-in", bytes(st.bytes_in), st.bytes_in);
    setTile("s-out", bytes(st.bytes_out), st.bytes_out);
    setTile("s-failed", String(st.logins_failed), st.logins_failed,
      st.logins_throttled + " more refused unheard (back-off)");
    renderClients(clients, now);
    renderProxies(clients, server.uptime_ms);
    renderFails(fails);
    const parts = ["control port " + server.port, server.codec, server.tls ? "TLS " + server.fingerprint : "no TLS"];
    if (server.vhost_http_port) parts.push("HTTP vhost port " + server.vhost_http_port);
    if (server.vhost_https_port) parts.push("HTTPS vhost port " + server.vhost_https_port);
    $("footer").textContent = parts.join(" \u00b7 ");
  }

  // ---- polling ----------------------------------------------------------------------------------

  function status(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function askToken(why) {
    clearTimeout(timer);
    $("main").hidden = true;
    $("login").hidden = false;
    $("login-why").textContent = why;
    status("login", "token needed");
    $("token").focus();
  }

  async function poll() {
    try {
      // One request first: with a wrong token, one failed guess per try, not three (each one counts
      // toward the endpoint's back-off).
      const server = await get("api/v1/server");
      const clients = (await get("api/v1/clients")).clients;
      const fails = await get("api/v1/logins/failed");
      $("login").hidden = true;
      $("main").hidden = false;
      render(server, clients, fails);
      document.body.dataset.polls = String(++polls);
      status("ok", "updated " + new Date().toLocaleTimeString(undefined, { hour12: false }));
      schedule(POLL_MS);
    } catch (e) {
      if (e.status === 401 && e.scheme === "Basic") {
        status("error", "credentials refused: reload the page to log in again");
      } else if (e.status === 401) {
        // No polling behind a wrong token: it would lock this address out.
        const had = token !== null;
        token = null;
        sessionStorage.removeItem(TOKEN_KEY);
        askToken(had ? "That token was refused." : "");
      } else if (e.status === 429) {
        status("error", "too many failed logins from this address: retrying in " + e.retry + " s");
        schedule(Math.max(1, e.retry) * 1000);
      } else {
        status("error", "no answer from the server (" + e.message + "), retrying");
        schedule(POLL_MS * 3);
      }
    }
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value;
    $("token").value = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    status("connecting", "connecting\u2026");
    poll();
  });

  poll();
})();
