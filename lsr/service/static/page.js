// Niceties only: the page works without this file (plain GET form, <details> for explanations).
"use strict";
document.documentElement.classList.add("has-js");

document.addEventListener("DOMContentLoaded", () => {
  // hybrid-only controls follow the mode, so it is clear which options apply
  const mode = document.getElementById("mode");
  const alpha = document.getElementById("alpha");
  const placement = document.getElementById("placement");
  const hybridOnly = [alpha, placement].filter((el) => el && !el.hasAttribute("disabled"));
  const sync = () => hybridOnly.forEach((el) => { el.disabled = mode.value !== "hybrid"; });
  if (mode && hybridOnly.length) { mode.addEventListener("change", sync); sync(); }

  // one button opens or closes every explanation
  const whys = Array.from(document.querySelectorAll("details.why"));
  const summary = document.querySelector(".summary");
  if (whys.length && summary) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = "toggle-why";
    button.textContent = "Show all explanations";
    button.addEventListener("click", () => {
      const open = !whys.every((d) => d.open);
      whys.forEach((d) => { d.open = open; });
      button.textContent = open ? "Hide all explanations" : "Show all explanations";
    });
    summary.appendChild(button);
  }

  // "/" focuses the query box, as on most search pages
  const q = document.getElementById("q");
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && q && document.activeElement !== q && !e.target.closest("input,select,textarea")) {
      e.preventDefault(); q.focus(); q.select();
    }
  });
});
