// The console's only script: the live feed, copy buttons, confirmations. No eval, no inline
// script: the page's Content-Security-Policy allows this file and nothing else.
"use strict";

(function () {
  // Rows and gauges arrive as HTML the server rendered with every text escaped; they are
  // parsed in an inert <template> and moved into the page.
  function parse(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content.firstElementChild;
  }

  // A loop waits for a person: a line at the top of the page, with a link to the loop.
  function showNotice(notice) {
    const box = document.getElementById("notices");
    if (!box) return;
    const item = document.createElement("p");
    item.className = "notice";
    const link = document.createElement("a");
    link.href = notice.link;
    link.textContent = notice.title;
    item.appendChild(link);
    item.appendChild(document.createTextNode(" " + notice.body));
    box.prepend(item);
  }

  function offerNotifications() {
    const offer = document.getElementById("notify-offer");
    if (!offer || !("Notification" in window) || Notification.permission !== "default") return;
    offer.hidden = false;
    document.getElementById("notify").addEventListener("click", function () {
      Notification.requestPermission().then(function () { offer.hidden = true; });
    });
  }

  function notifyOf(notice) {
    showNotice(notice);
    if ("Notification" in window && Notification.permission === "granted") {
      const shown = new Notification("ccgate: " + notice.title, {body: notice.body,
                                                                tag: notice.link});
      shown.addEventListener("click", function () { window.location = notice.link; });
    }
  }

  // Pages without a stream of their own still hear when a loop waits for a person.
  function listenForNotices(url) {
    let retry = 1000;
    function connect() {
      const source = new EventSource(url);
      source.addEventListener("open", function () { retry = 1000; });
      source.addEventListener("choice", function (event) { notifyOf(JSON.parse(event.data)); });
      source.addEventListener("bye", function () { source.close(); });
      source.addEventListener("error", function () {
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(connect, retry);
          retry = Math.min(retry * 2, 30000);
        }
      });
    }
    connect();
  }

  function startFeed(table) {
    const body = table.tBodies[0];
    const limit = Number(table.dataset.rows || "50");
    const state = document.getElementById("feed-state");
    const empty = document.querySelector(".feed .empty");
    let source = null;
    let retry = 1000;

    function say(text) {
      if (state) state.textContent = text;
    }

    function connect() {
      source = new EventSource(table.dataset.source);
      source.addEventListener("open", function () {
        retry = 1000;
        say("live");
      });
      source.addEventListener("row", function (event) {
        const row = parse(event.data);
        if (!row) return;
        const old = document.getElementById(row.id);
        if (old) {
          old.replaceWith(row);
        } else {
          body.insertBefore(row, body.firstElementChild);
          if (empty) empty.remove();
        }
        while (body.rows.length > limit) body.deleteRow(body.rows.length - 1);
      });
      // The gauges and the Plan card, rendered again by the server.
      ["stats", "plan"].forEach(function (name) {
        source.addEventListener(name, function (event) {
          const fresh = parse(event.data);
          const old = document.getElementById(name);
          if (fresh && old) old.replaceWith(fresh);
        });
      });
      source.addEventListener("bye", function () {
        source.close();
        say("stopped (the gateway is shutting down)");
      });
      source.addEventListener("choice", function (event) {
        notifyOf(JSON.parse(event.data));
      });
      source.addEventListener("error", function () {
        if (source.readyState === EventSource.CLOSED) {
          say("reconnecting…");
          setTimeout(connect, retry);
          retry = Math.min(retry * 2, 30000);
        } else {
          say("reconnecting…");
        }
      });
    }
    connect();
  }

  function copyButtons() {
    document.querySelectorAll("button.copy").forEach(function (button) {
      button.addEventListener("click", function () {
        const field = document.getElementById(button.dataset.copy);
        if (!field) return;
        field.select();
        const done = function () {
          button.textContent = "Copied";
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(field.value).then(done, function () {
            document.execCommand("copy");
            done();
          });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
  }

  function confirmations() {
    document.querySelectorAll("button[data-confirm]").forEach(function (button) {
      button.addEventListener("click", function (event) {
        if (!window.confirm(button.dataset.confirm)) event.preventDefault();
      });
    });
  }

  // The usage charts: one uPlot chart per measure, one line per key or model, drawn from the
  // JSON block the page carries (not executed: type application/json).
  const COLOURS = ["#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207",
                   "#be185d", "#4d7c0f", "#1e3a8a"];

  function drawCharts(block) {
    if (typeof uPlot === "undefined") return;
    const data = JSON.parse(block.textContent);
    document.querySelectorAll("figure.chart").forEach(function (figure) {
      const plot = figure.querySelector(".plot");
      const measure = figure.dataset.measure;
      const unit = figure.dataset.unit;
      const series = [{}].concat(data.series.map(function (name, i) {
        return {label: name, stroke: COLOURS[i % COLOURS.length], width: 2,
                spanGaps: measure.indexOf("ttft") === 0,
                value: function (u, v) {
                  if (v == null) return "—";
                  return unit === "$" ? "$" + v.toFixed(4) : Math.round(v).toLocaleString() + (unit ? " " + unit : "");
                }};
      }));
      const values = [data.x].concat(data.measures[measure]);
      const width = Math.max(280, plot.clientWidth || figure.clientWidth - 28);
      new uPlot({
        width: width, height: 200, series: series,
        scales: {x: {time: true}},
        axes: [{}, {size: 64, values: function (u, ticks) {
          return ticks.map(function (v) {
            return unit === "$" ? "$" + v.toFixed(v < 0.01 ? 4 : 2) : v.toLocaleString();
          });
        }}],
        legend: {live: true},
      }, values, plot);
    });
  }

  // A loop's page: its events as they happen, forms sent without leaving the page.
  function csrf() {
    return document.body.dataset.csrf || "";
  }

  function send(form, submitter) {
    return post(form, new URLSearchParams(new FormData(form, submitter)));
  }

  function post(form, body) {
    return fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: {"X-CSRF-Token": csrf(), "X-Requested-With": "fetch"},
    }).then(function (response) {
      return response.json().catch(function () {
        return {ok: response.ok, message: "The gateway answered " + response.status + "."};
      });
    });
  }

  function startLoop(log) {
    const state = document.getElementById("loop-state");
    let source = null;
    let retry = 1000;

    function say(text) {
      if (state) state.textContent = text;
    }

    function scroll() {
      window.scrollTo(0, document.body.scrollHeight);
    }

    function place(node) {
      if (!node) return;
      const old = node.id ? document.getElementById(node.id) : null;
      if (old) {
        old.replaceWith(node);
      } else if (node.tagName === "LI") {
        log.appendChild(node);
      }
      if (node.classList.contains("choice") && node.dataset.choice) {
        say("waiting for you");
        tell(node);
      } else if (node.classList.contains("end")) {
        say("idle");
      } else if (node.classList.contains("note") || node.classList.contains("msg")) {
        say("working");
      }
      scroll();
    }

    function tell(node) {
      if (!("Notification" in window) || Notification.permission !== "granted") return;
      const what = node.querySelector(".ask");
      new Notification("ccgate: a loop is waiting for you", {
        body: (document.title + ": " + (what ? what.textContent : "a choice")).slice(0, 180),
        tag: node.id,
      });
    }

    function addText(kind, text) {
      let last = log.lastElementChild;
      if (!last || last.dataset.kind !== kind) {
        last = document.createElement("li");
        last.className = kind;
        last.dataset.kind = kind;
        const box = document.createElement("div");
        box.className = "text";
        if (kind === "thinking") {
          const details = document.createElement("details");
          const summary = document.createElement("summary");
          summary.textContent = "Thinking";
          details.appendChild(summary);
          details.appendChild(box);
          last.appendChild(details);
        } else {
          last.appendChild(box);
        }
        log.appendChild(last);
      }
      last.querySelector(".text").textContent += text;
      scroll();
    }

    function connect() {
      source = new EventSource(log.dataset.source);
      source.addEventListener("open", function () {
        retry = 1000;
      });
      source.addEventListener("reset", function (event) {
        const data = JSON.parse(event.data);
        log.querySelectorAll('[data-turn="' + CSS.escape(data.turn_id) + '"]').forEach(
          function (node) { node.remove(); });
        // The text of the running turn has no turn id: drop what followed its message.
        const template = document.createElement("template");
        template.innerHTML = data.html;
        Array.from(template.content.children).forEach(function (node) { place(node); });
      });
      source.addEventListener("item", function (event) {
        place(parse(event.data));
      });
      source.addEventListener("text", function (event) {
        const data = JSON.parse(event.data);
        addText(data.kind, data.text);
      });
      source.addEventListener("bye", function () {
        source.close();
        say("closed");
      });
      source.addEventListener("error", function () {
        say("reconnecting…");
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(connect, retry);
          retry = Math.min(retry * 2, 30000);
        }
      });
    }
    connect();

    log.addEventListener("submit", function (event) {
      const form = event.target;
      if (!form.classList.contains("choice-form")) return;
      event.preventDefault();
      const body = new URLSearchParams(new FormData(form, event.submitter));
      const buttons = form.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      post(form, body).then(function (result) {
        if (!result.ok) {
          buttons.forEach(function (b) { b.disabled = false; });
          window.alert(result.message || "That did not work.");
        }
      });
    });

    const composer = document.getElementById("composer");
    if (composer) {
      const error = document.getElementById("composer-error");
      composer.addEventListener("submit", function (event) {
        event.preventDefault();
        send(composer, event.submitter).then(function (result) {
          if (result.ok) {
            composer.reset();
            error.hidden = true;
          } else {
            error.textContent = result.message || "The message was not sent.";
            error.hidden = false;
          }
        });
      });
    }
    const interrupt = document.getElementById("interrupt");
    if (interrupt) {
      interrupt.addEventListener("submit", function (event) {
        event.preventDefault();
        send(interrupt, event.submitter);
      });
    }
    scroll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    const log = document.getElementById("log");
    if (log) startLoop(log);
    const feed = document.getElementById("feed");
    if (feed) startFeed(feed);
    if (!log && !feed && document.body.dataset.notices) {
      listenForNotices(document.body.dataset.notices);
    }
    const usage = document.getElementById("usage-data");
    if (usage) drawCharts(usage);
    copyButtons();
    confirmations();
    offerNotifications();
  });
})();
