// The launcher's only script (pages carry no inline script: their Content-Security-Policy
// forbids it). A form with data-confirm asks before it is sent; the question is data,
// read from the attribute, never code.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question !== undefined && !window.confirm(question)) {
    event.preventDefault();
  }
});

// The frame on the hub's home page (embed_home.html): the hub page's theme (its dark-mode
// toggle or the system's colour scheme), followed live, and this page's height, sent to the
// hub page (hub-home.js sizes the frame; same origin only).
(() => {
  const root = document.documentElement;
  if (root.dataset.kdashEmbed === undefined) {
    return;
  }
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  let parentRoot = null;
  try {
    parentRoot = window.parent !== window ? window.parent.document.documentElement : null;
  } catch {
    parentRoot = null; // another origin: the system's scheme alone
  }
  const applyTheme = () => {
    const theme = parentRoot && parentRoot.getAttribute("data-bs-theme");
    root.setAttribute("data-bs-theme", theme || (dark.matches ? "dark" : "light"));
  };
  applyTheme();
  dark.addEventListener("change", applyTheme);
  if (parentRoot) {
    new MutationObserver(applyTheme).observe(parentRoot, {attributeFilter: ["data-bs-theme"]});
  }
  const sendHeight = () => {  // the content's height, not the frame's (that would only grow)
    const content = document.body && document.body.firstElementChild;
    if (window.parent !== window && content) {
      const height = Math.ceil(content.getBoundingClientRect().height);
      window.parent.postMessage({kdashEmbedHeight: height}, window.location.origin);
    }
  };
  window.addEventListener("load", sendHeight);
  window.addEventListener("resize", sendHeight);
})();
