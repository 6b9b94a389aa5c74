// The agents' inbox: keyboard shortcuts, canned answers without a reload, and live updates.
// Plain JavaScript, no library. Every page works without it: each shortcut has a button, the
// canned answer form reloads the page, and a Refresh link stands in for the live updates.
(function () {
  "use strict";

  var root = document.getElementById("inbox");
  if (!root) return;
  var page = root.dataset.page; // "list" or "conversation"
  var ORDER_KEY = "hub.inbox.order"; // the list's conversation links, for j/k on a conversation

  function typing(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  // -- the list: a selected row, moved with j/k ------------------------------------------------

  function rows() {
    return Array.prototype.slice.call(root.querySelectorAll("tr[data-row]"));
  }

  function selectedIndex() {
    return rows().findIndex(function (row) { return row.classList.contains("selected"); });
  }

  function select(index) {
    var all = rows();
    if (!all.length) return;
    index = Math.max(0, Math.min(all.length - 1, index));
    all.forEach(function (row) { row.classList.remove("selected"); });
    all[index].classList.add("selected");
    all[index].querySelector("a.open").focus();
  }

  function selectedRow() {
    var all = rows();
    var index = selectedIndex();
    if (index < 0 && document.activeElement) {
      var row = document.activeElement.closest && document.activeElement.closest("tr[data-row]");
      return row || null;
    }
    return all[index] || null;
  }

  function rememberOrder() {
    var links = rows().map(function (row) { return row.querySelector("a.open").getAttribute("href"); });
    try { sessionStorage.setItem(ORDER_KEY, JSON.stringify(links)); } catch (e) { /* private mode */ }
  }

  // -- a conversation: j/k go to the next or previous one of the list it was opened from -------

  function neighbour(step) {
    var order;
    try { order = JSON.parse(sessionStorage.getItem(ORDER_KEY) || "[]"); } catch (e) { order = []; }
    var index = order.indexOf(location.pathname);
    if (index < 0) return null;
    return order[index + step] || null;
  }

  function press(scope, key) {
    var button = scope && scope.querySelector('button[data-key="' + key + '"]');
    if (button) button.click();
  }

  // -- keyboard shortcuts ----------------------------------------------------------------------

  var dialog = document.getElementById("shortcuts");

  function showShortcuts() {
    if (dialog && dialog.showModal && !dialog.open) dialog.showModal();
  }

  Array.prototype.forEach.call(root.querySelectorAll("[data-show-shortcuts]"), function (button) {
    button.hidden = false;
    button.addEventListener("click", showShortcuts);
  });

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target) || (dialog && dialog.open)) return;
    var key = event.key;
    if (key === "?") {
      showShortcuts();
    } else if (page === "list" && (key === "j" || key === "k")) {
      var index = selectedIndex();
      select(index < 0 ? 0 : index + (key === "j" ? 1 : -1));
    } else if (page === "list" && (key === "a" || key === "e")) {
      press(selectedRow(), key);
    } else if (page === "list" && key === "r") {
      var row = selectedRow();
      if (row) location.href = row.querySelector("a.open").getAttribute("href") + "#reply-text";
    } else if (page === "conversation" && (key === "j" || key === "k")) {
      var target = neighbour(key === "j" ? 1 : -1);
      if (target) location.href = target;
    } else if (page === "conversation" && (key === "a" || key === "e")) {
      press(root, key);
    } else if (page === "conversation" && key === "r") {
      document.getElementById("reply-text").focus();
    } else {
      return;
    }
    event.preventDefault();
  });

  if (page === "conversation" && location.hash === "#reply-text") {
    document.getElementById("reply-text").focus();
  }

  // -- canned answers: fill the answer box without leaving the page -----------------------------

  var cannedForm = root.querySelector("form[data-canned]");
  if (cannedForm) {
    cannedForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var shortcut = cannedForm.querySelector("select").value;
      var url = cannedForm.dataset.canned + "?shortcut=" + encodeURIComponent(shortcut);
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          if (answer.text === undefined) {
            announce(answer.error || "");
            return;
          }
          var box = document.getElementById("reply-text");
          box.value = answer.text;
          box.focus();
        })
        .catch(function () { cannedForm.submit(); });
    });
  }

  // -- live updates: refresh the part of the page an event concerns ------------------------------

  var region = document.getElementById("live-region");
  var status = document.getElementById("live-status");

  function announce(text) {
    if (status) status.textContent = text;
  }

  function refresh() {
    var keep = selectedIndex();
    fetch(root.dataset.refresh, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then(function (html) {
        region.innerHTML = html; // rendered (and escaped) by the server
        if (page === "list") {
          rememberOrder();
          if (keep >= 0) rows()[Math.min(keep, rows().length - 1)].classList.add("selected");
        }
        announce(root.dataset.updated || "");
      })
      .catch(function () { /* the Refresh link still works */ });
  }

  function concerned(event) {
    if (page === "list") return true;
    try {
      return String(JSON.parse(event.data).conversation_id) === root.dataset.conversationId;
    } catch (e) {
      return false;
    }
  }

  // A busy inbox sends many events: refresh at most once a second, after the last of a burst.
  var pending = null;
  function refreshSoon() {
    if (pending) clearTimeout(pending);
    pending = setTimeout(function () { pending = null; refresh(); }, 1000);
  }

  if (window.EventSource && root.dataset.events && region) {
    var source = new EventSource(root.dataset.events);
    ["message", "status"].forEach(function (kind) {
      source.addEventListener(kind, function (event) {
        if (concerned(event)) refreshSoon();
      });
    });
  }

  if (page === "list") rememberOrder();
})();
