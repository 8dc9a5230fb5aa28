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
