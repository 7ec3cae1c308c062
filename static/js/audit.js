// Small enhancements for the audit log pages; everything works without them.
(function () {
  "use strict";
  var range = document.getElementById("id_range");
  var from = document.getElementById("id_from");
  var to = document.getElementById("id_to");
  if (range && from && to) {
    // A preset clears the custom dates; typing a date selects "Custom dates".
    range.addEventListener("change", function () {
      if (range.value !== "custom") { from.value = ""; to.value = ""; }
    });
    [from, to].forEach(function (input) {
      input.addEventListener("change", function () { if (input.value) range.value = "custom"; });
    });
  }

  // The Activity dropdown: Escape closes it, a click elsewhere too; the label follows the ticks.
  document.querySelectorAll("details.dropdown").forEach(function (dropdown) {
    var chosen = dropdown.querySelector("#activity-chosen");
    dropdown.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && dropdown.open) { dropdown.open = false; dropdown.querySelector("summary").focus(); }
    });
    document.addEventListener("click", function (e) {
      if (dropdown.open && !dropdown.contains(e.target)) dropdown.open = false;
    });
    dropdown.addEventListener("change", function () {
      var ticked = dropdown.querySelectorAll("input[type=checkbox]:checked");
      if (!chosen) return;
      chosen.textContent = ticked.length === 0 ? "All activities"
        : ticked.length === 1 ? ticked[0].parentNode.textContent.trim()
        : ticked.length + " activities";
    });
  });

  // Copy buttons: data-copy names the element whose text is copied.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var status = document.getElementById("copy-status");
      var text = source ? source.textContent : "";
      function done(ok) {
        if (status) status.textContent = ok ? "Copied to the clipboard." : "Copy failed: select the text and copy it.";
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      } else {
        var area = document.createElement("textarea");
        area.value = text; document.body.appendChild(area); area.select();
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        document.body.removeChild(area); done(ok);
      }
    });
  });
})();
