// The staff console's little JavaScript. Every page works without it; this only saves reloads.
(function () {
  "use strict";

  // Progress: poll the JSON every two seconds and update the numbers in place.
  var progress = document.getElementById("progress");
  if (progress && progress.dataset.finished !== "true") {
    var poll = function () {
      fetch(progress.dataset.progressUrl, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          progress.querySelector("[data-field=status]").textContent = data.status_label;
          progress.querySelector("[data-field=percent]").textContent = data.percent;
          progress.querySelector("[data-field=final]").textContent = data.final;
          progress.querySelector("[data-field=total]").textContent = data.total;
          document.getElementById("progress-bar").value = data.percent;
          progress.querySelectorAll("[data-cell]").forEach(function (cell) {
            var key = cell.dataset.cell.split(":");
            var counts = key[0] === "all" ? data.by_status : (data.by_channel[key[0]] || {});
            cell.textContent = counts[key[1]] || 0;
          });
          if (data.finished) {
            window.location.reload(); // the report is complete now
          } else {
            window.setTimeout(poll, 2000);
          }
        })
        .catch(function () { window.setTimeout(poll, 2000); });
    };
    window.setTimeout(poll, 2000);
  }

  var compose = document.getElementById("compose");
  if (!compose) { return; }

  // Areas: a search box that hides the communities that do not match.
  var search = compose.querySelector(".area-search");
  var filter = document.getElementById("area-filter");
  search.hidden = false;
  filter.addEventListener("input", function () {
    var wanted = filter.value.trim().toLowerCase();
    compose.querySelectorAll("ul.checkboxes li").forEach(function (item) {
      item.hidden = wanted !== "" && item.dataset.name.indexOf(wanted) === -1;
    });
  });

  // Preview as you type: the server renders it (the same code as "Refresh preview").
  var timer = null;
  var refresh = function () {
    var data = new FormData(compose);
    data.set("action", "preview");
    fetch(compose.action, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "X-Hub-Fragment": "preview" }
    })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var current = document.getElementById("preview");
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("#preview");
        if (current && fresh) { current.replaceWith(fresh); }
      });
  };
  compose.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 600);
  });
})();
