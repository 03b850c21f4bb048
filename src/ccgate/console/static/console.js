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
      source.addEventListener("stats", function (event) {
        const fresh = parse(event.data);
        const old = document.getElementById("stats");
        if (fresh && old) old.replaceWith(fresh);
      });
      source.addEventListener("bye", function () {
        source.close();
        say("stopped (the gateway is shutting down)");
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
        axes: [{}, {size: 60}],
        legend: {live: true},
      }, values, plot);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const feed = document.getElementById("feed");
    if (feed) startFeed(feed);
    const usage = document.getElementById("usage-data");
    if (usage) drawCharts(usage);
    copyButtons();
    confirmations();
  });
})();
