// coordkit console: live parts over server-sent events, lease countdowns, and
// a value checked in its codec before it is sent. No inline script anywhere.
"use strict";

// Count each [data-ttl] down from when it was rendered.
function countdowns(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll("[data-ttl]")) {
    el.dataset.deadline = String(now + Number(el.dataset.ttl) * 1000);
  }
}

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-deadline]")) {
    const left = Math.round((Number(el.dataset.deadline) - now) / 1000);
    // Past the time left at the last render: a lease that ended takes its
    // row away (the server sends the part again), so one still shown was
    // renewed by its keep-alives since.
    el.textContent = left > 0 ? left + "s" : "renewed";
  }
}

// Replace each [data-live] element's content with every part the server sends.
function live() {
  for (const el of document.querySelectorAll("[data-live]")) {
    const source = new EventSource(el.dataset.live);
    source.addEventListener("part", (event) => {
      el.innerHTML = event.data;
      countdowns(el);
      el.dataset.updated = String(Number(el.dataset.updated || "0") + 1);
    });
    source.addEventListener("open", () => { el.dataset.connected = "yes"; });
  }
}

// A JSON value is parsed before the form is sent; the server checks it again.
function validation() {
  const editor = document.getElementById("editor");
  const invalid = document.getElementById("invalid");
  if (!editor || !invalid || editor.dataset.codec !== "json") return;
  editor.form.addEventListener("submit", (event) => {
    try {
      JSON.parse(editor.value);
      invalid.hidden = true;
    } catch (e) {
      invalid.textContent = "Not valid JSON: " + e.message;
      invalid.hidden = false;
      event.preventDefault();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  countdowns(document);
  live();
  validation();
  setInterval(tick, 1000);
});
