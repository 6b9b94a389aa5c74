// The resident portal: notifications in this browser (web push). An extra: the portal works
// without it. Shown only where the browser can do it; subscribes with the hub's VAPID key and
// posts the subscription to the hub, which stores it as a push address.
(function () {
  "use strict";
  var box = document.getElementById("push");
  if (!box || !("serviceWorker" in navigator) || !("PushManager" in window)) return;
  var button = box.querySelector("button");
  var status = box.querySelector("[role=status]");
  box.hidden = false;

  function key(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    navigator.serviceWorker.register(box.dataset.worker)
      .then(function () { return navigator.serviceWorker.ready; })
      .then(function (registration) {
        return registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: key(box.dataset.key)
        });
      })
      .then(function (subscription) {
        return fetch(box.dataset.url, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": box.dataset.csrf },
          body: JSON.stringify(subscription.toJSON())
        });
      })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        window.location.reload();
      })
      .catch(function () {
        status.textContent = box.dataset.failed;
        button.disabled = false;
      });
  });
})();
