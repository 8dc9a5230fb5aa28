// Loaded by the hub's home page (the pack's spawner/templates/home.html): sizes the frame
// that shows the user's side services (the launcher's embed/home page) to its content. Only
// messages from that frame, on this origin, are read, and only as a number.
"use strict";
window.addEventListener("message", (event) => {
  const frame = document.getElementById("kdash-side-services");
  if (!frame || event.source !== frame.contentWindow || event.origin !== window.location.origin) {
    return;
  }
  const height = Number(event.data && event.data.kdashEmbedHeight);
  if (Number.isFinite(height) && height > 0) {
    frame.style.height = Math.min(Math.ceil(height) + 2, 4000) + "px";
  }
});
