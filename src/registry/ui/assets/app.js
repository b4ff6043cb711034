// berth web UI: progressive enhancement only; every page works without it.
"use strict";
(function () {
  const live = () => document.getElementById("live");
  function announce(text) { const l = live(); if (l) { l.textContent = ""; setTimeout(() => { l.textContent = text; }, 50); } }
  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const area = document.createElement("textarea");
    area.value = text; area.setAttribute("readonly", ""); area.style.position = "fixed"; area.style.opacity = "0";
    document.body.appendChild(area); area.select();
    const ok = document.execCommand("copy");
    document.body.removeChild(area);
    if (!ok) throw new Error("copy refused");
  }
  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll("button.copy")) {
      button.hidden = false;
      button.addEventListener("click", async () => {
        const target = button.dataset.copyTarget && document.getElementById(button.dataset.copyTarget);
        const text = target ? target.value : button.dataset.copy;
        const label = button.textContent;
        try { await copy(text); button.textContent = "Copied"; announce("Copied " + text); }
        catch (e) { button.textContent = "Copy failed"; announce("Could not copy; select the text instead"); }
        setTimeout(() => { button.textContent = label; }, 1500);
      });
    }
    for (const all of document.querySelectorAll("input[data-select-all]")) {
      all.hidden = false;
      const boxes = () => all.closest("form").querySelectorAll('input[type=checkbox][name="tag"]');
      all.addEventListener("change", () => { for (const b of boxes()) b.checked = all.checked; });
    }
  });
})();
