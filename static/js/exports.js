// Export log: open the confirmation <dialog> instead of following the link (the link
// is the same confirmation as a page, for browsers without JavaScript), and keep the
// Exports table up to date while an export is queued or running.
(function () {
  "use strict";

  document.querySelectorAll("[data-export-dialog]").forEach(function (button) {
    var dialog = document.getElementById(button.dataset.exportDialog);
    if (!dialog || typeof dialog.showModal !== "function") return;
    button.addEventListener("click", function (event) {
      event.preventDefault();
      dialog.showModal();
    });
    dialog.querySelectorAll("[data-dialog-close]").forEach(function (close) {
      close.addEventListener("click", function () { dialog.close(); });
    });
  });

  var POLL_MS = 2000;
  function poll() {
    var table = document.getElementById("export-table");
    var url = table && table.dataset.exportPoll;
    if (!url) return;
    window.setTimeout(function () {
      fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var fresh = holder.querySelector("#export-table");
          if (fresh) document.getElementById("export-table").replaceWith(fresh);
          poll();
        })
        .catch(function () { window.setTimeout(poll, POLL_MS * 5); });
    }, POLL_MS);
  }
  poll();
})();
