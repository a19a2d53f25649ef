// Vigil console: a little hand-written JavaScript. No inline script anywhere (CSP: script-src 'self').
"use strict";

(function () {
  // Print buttons on the printable pages.
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".print-button").forEach(function (b) {
      b.addEventListener("click", function () { window.print(); });
    });

    // Screenshots load only when the DSL opens them (each load is audited server-side).
    document.querySelectorAll("details.shot").forEach(function (d) {
      d.addEventListener("toggle", function () {
        var img = d.querySelector("img[data-src]");
        if (d.open && img && !img.getAttribute("src")) {
          img.setAttribute("src", img.getAttribute("data-src"));
        }
      });
    });

    // The queue refreshes itself by short polling; the server renders (and escapes) the rows.
    var table = document.getElementById("queue");
    var body = document.getElementById("queue-rows");
    if (!table || !body) { return; }
    var digest = table.getAttribute("data-digest");
    var total = document.getElementById("queue-total");
    var updated = document.getElementById("queue-updated");
    var interval = parseInt(table.getAttribute("data-poll-ms") || "3000", 10);

    function poll() {
      fetch("/queue/rows" + window.location.search, {credentials: "same-origin",
                                                      headers: {"Accept": "text/html"}})
        .then(function (r) {
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          var d = r.headers.get("X-Queue-Digest");
          var t = r.headers.get("X-Queue-Total");
          return r.text().then(function (html) { return [d, t, html]; });
        })
        .then(function (res) {
          if (res[0] !== digest) {
            digest = res[0];
            var doc = new DOMParser().parseFromString(
              "<table><tbody>" + res[2] + "</tbody></table>", "text/html");
            var fresh = doc.querySelector("tbody");
            // keep the DSL's bulk selection across refreshes
            var picked = {};
            body.querySelectorAll("input[name=item]:checked").forEach(function (b) {
              picked[b.value] = true;
            });
            fresh.querySelectorAll("input[name=item]").forEach(function (b) {
              if (picked[b.value]) { b.checked = true; }
            });
            body.replaceChildren.apply(body, Array.prototype.slice.call(fresh.children));
            table.setAttribute("data-digest", digest);
            if (total) { total.textContent = res[1]; }
          }
          if (updated) { updated.textContent = "Updated " + new Date().toLocaleTimeString("en-GB"); }
        })
        .catch(function () {
          if (updated) { updated.textContent = "Cannot reach the server; retrying."; }
        })
        .finally(function () { window.setTimeout(poll, interval); });
    }
    window.setTimeout(poll, interval);
  });
})();
