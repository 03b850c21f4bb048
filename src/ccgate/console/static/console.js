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

  document.addEventListener("DOMContentLoaded", function () {
    const feed = document.getElementById("feed");
    if (feed) startFeed(feed);
    copyButtons();
    confirmations();
  });
})();
