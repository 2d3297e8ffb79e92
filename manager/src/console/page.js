/* The status page's script, compiled into runfleetd (console.c). It polls
 * the admin API every two seconds and redraws each part in place. Every
 * string from the API (repository and job names come from webhooks) goes
 * into the page as text, never as markup. */
"use strict";
(function () {
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function dur(s) {
    if (s === null || s === undefined) return "-";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }

  async function get(path) {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) throw new Error(path + " answered " + r.status);
    return r.json();
  }

  function gpuCell(g) {
    const lines = [el("b", {}, "GPU " + g.index)];
    if (g.state === "runner") {
      lines.push(el("span", {}, g.pool || "runner"));
      if (g.job) {
        lines.push(el("span", { title: g.job.name }, g.job.repository));
        lines.push(el("span", {}, "#" + g.job.id));
        lines.push(el("span", {}, "running " + dur(g.job.running_seconds)));
      } else {
        lines.push(el("span", {}, g.runner_state || ""));
      }
    } else if (g.state === "devserver") {
      lines.push(el("span", {}, "dev server"));
      lines.push(el("span", {}, g.holder));
    } else {
      lines.push(el("span", {}, g.state));
    }
    return el("div", {
      class: "gpu " + g.state, "data-state": g.state,
      "data-holder": g.holder, "data-job": g.job ? g.job.id : null,
      title: g.holder || g.state,
    }, ...lines);
  }

  function renderGpus(nodes) {
    const map = $("gpumap");
    const cards = [];
    let cpu = 0, cpuReady = 0;
    for (const n of nodes) {
      if (n.gpus.length === 0) {
        cpu++;
        if (n.ready) cpuReady++;
        continue;
      }
      const busy = n.gpus.filter((g) => g.holder).length;
      cards.push(el("div", {
        class: "node" + (n.ready ? "" : " down"), "data-node": n.name,
      }, el("h3", {}, n.name,
            el("span", { class: "muted" }, n.node_group + " · " + busy + "/" +
               n.gpus.length + " held" + (n.ready ? "" : " · not ready"))),
      el("div", { class: "gpus" }, ...n.gpus.map(gpuCell))));
    }
    map.replaceChildren(...cards);
    if (cards.length === 0) map.append(el("p", { class: "muted" }, "No GPUs."));
    $("cpunodes").textContent = cpu === 0 ? "" :
      cpu + " node(s) without GPUs, " + cpuReady + " ready";
  }

  function renderQueue(queue) {
    const rows = queue.filter((q) => q.queued > 0).map((q) =>
      el("tr", { "data-pool": q.pool },
         el("td", {}, q.pool), el("td", {}, q.queued),
         el("td", {}, dur(q.oldest_wait_seconds)),
         el("td", { class: "text wrap reason",
                    "data-reason": q.reason ? q.reason.code : null },
            q.reason ? q.reason.text : ""),
         el("td", { class: "text wrap" }, q.next.map((j) =>
           j.repository + " " + j.name + " (" + dur(j.wait_seconds) + ")")
           .join(", "))));
    const box = $("queue");
    if (rows.length === 0) {
      box.replaceChildren(el("p", { class: "muted", id: "queue-empty" },
                             "Nothing queued."));
      return;
    }
    box.replaceChildren(el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "pool"), el("th", {}, "queued"),
        el("th", {}, "oldest"), el("th", { class: "text" }, "why the head waits"),
        el("th", { class: "text" }, "next, in start order"))),
      el("tbody", {}, ...rows))));
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }

  function chart(title, samples, series) {
    const W = 300, H = 90, t0 = Date.now() / 1000 - 3600;
    let max = 1;
    for (const s of samples)
      for (const [key] of series)
        if (s[key] !== null && s[key] > max) max = s[key];
    const box = svg("svg", { viewBox: "0 0 " + W + " " + H,
                             preserveAspectRatio: "none", role: "img" });
    for (const [key, cls] of series) {
      const pts = samples.filter((s) => s[key] !== null).map((s) =>
        (((s.at - t0) / 3600) * W).toFixed(1) + "," +
        (H - 4 - (s[key] / max) * (H - 8)).toFixed(1));
      box.append(svg("polyline", { class: cls, points: pts.join(" ") }));
      if (pts.length > 0) {
        const [x, y] = pts[pts.length - 1].split(",");
        box.append(svg("circle", { class: cls, cx: x, cy: y, r: 2.5 }));
      }
    }
    const last = samples.length ? samples[samples.length - 1] : null;
    const now = series.map(([key, , label]) => label + " " +
      (last && last[key] !== null ? Math.round(last[key] * 10) / 10 : "-"));
    return el("div", { class: "chart" }, el("b", {}, title), box,
              el("div", { class: "muted" }, now.join(" · ") + " · max " +
                 Math.round(max * 10) / 10));
  }

  function renderCharts(h) {
    const s = h.samples;
    $("charts").replaceChildren(
      chart("Jobs queued", s, [["queued", "a", "now"]]),
      chart("Runners busy", s, [["busy", "a", "busy"], ["runners", "b", "all"]]),
      chart("Wait (s)", s, [["wait_p50", "a", "p50"], ["wait_p95", "b", "p95"]]));
  }

  function renderPools(pools) {
    const body = document.querySelector("#pools tbody");
    body.replaceChildren(...pools.map((p) => el("tr", {},
      el("td", {}, p.name), el("td", {}, p.priority), el("td", {}, p.demand),
      el("td", {}, p.in_progress), el("td", {}, p.runners.starting),
      el("td", {}, p.runners.idle), el("td", {}, p.runners.busy),
      el("td", {}, p.runners.stopping), el("td", {}, p.max_runners),
      el("td", {}, p.jobs_completed), el("td", {}, p.runner_failures))));
  }

  function renderJobs(jobs) {
    const recent = jobs.slice().sort((a, b) =>
      (b.queued_at || "").localeCompare(a.queued_at || "") || b.id - a.id)
      .slice(0, 15);
    if (recent.length === 0) {
      $("jobs").replaceChildren(el("p", { class: "muted" }, "No jobs yet."));
      return;
    }
    $("jobs").replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "job"),
        el("th", { class: "text" }, "repository"), el("th", {}, "pool"),
        el("th", {}, "status"), el("th", {}, "wait"))),
      el("tbody", {}, ...recent.map((j) => el("tr", { "data-job": j.id },
        el("td", {}, j.name), el("td", { class: "text" }, j.repository),
        el("td", {}, j.pool || "-"),
        el("td", {}, j.conclusion || j.status.replace("_", " ")),
        el("td", {}, dur(j.wait_seconds)))))));
  }

  function renderRecovery(r) {
    const b = r.budget;
    $("budget").textContent = !b ? "GitHub API: not in use" :
      "GitHub API: " + (b.remaining === null ? "?" : b.remaining) + " of " +
      (b.limit === null ? "?" : b.limit) + " left" +
      (b.reset_at ? ", resets " + new Date(b.reset_at).toLocaleTimeString()
                  : "") +
      "; runner calls held " + dur(b.hold_seconds.mutations) +
      ", waiting " + b.waiting.runner + "; secondary limits hit " +
      b.secondary_limited;
    const last = r.last_run;
    $("recovery").textContent = !last ? "Recovery: not run yet" :
      "Recovery: last run " + new Date(last.finished_at).toLocaleTimeString() +
      " (" + last.trigger + ")" + (r.running ? ", running now" : "") +
      "; redelivered " + last.redelivered + ", jobs found " + last.jobs_found +
      ", errors " + last.errors;
  }

  async function renderRole(leader) {
    const r = await fetch("/readyz", { cache: "no-store" });
    const pill = $("role");
    let text;
    if (!leader.election) text = r.ok ? "serving" : "stopping";
    else if (leader.leading) text = r.ok ? "leader" : "leader, not ready";
    else text = "standby" + (leader.holder ? ", leader " + leader.holder : "");
    pill.textContent = text;
    pill.dataset.role = leader.election ? (leader.leading ? "leader" : "standby")
                                        : "single";
    // A standby's /readyz is 503 by design: only a stopping one is red.
    const standby = leader.election && !leader.leading;
    pill.className = "pill" + (r.ok || standby ? "" : " down");
  }

  async function refresh() {
    try {
      const [pools, nodes, queue, history, jobs, recovery, leader] =
        await Promise.all(["pools", "nodes", "queue", "history", "jobs",
                           "recovery", "leader"].map((p) => get("/api/v1/" + p)));
      renderGpus(nodes.nodes);
      renderQueue(queue.queue);
      renderCharts(history);
      renderPools(pools.pools);
      renderJobs(jobs.jobs);
      renderRecovery(recovery.recovery);
      await renderRole(leader);
      document.body.classList.remove("stale");
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.updates = String(
        Number(document.body.dataset.updates || 0) + 1);
    } catch (e) {
      document.body.classList.add("stale");
      $("updated").textContent = "not updated: " + e.message;
    }
    setTimeout(refresh, POLL_MS);
  }
  refresh();
})();
