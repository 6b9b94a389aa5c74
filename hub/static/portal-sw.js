// The resident portal's service worker, served as /me/sw.js so that its scope is the portal:
// shows a notice that arrives by web push (the hub sends JSON {"title", "body", "url"}) and
// opens the notice when the notification is clicked.
self.addEventListener("push", function (event) {
  var data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = { body: event.data.text() }; }
  if (!data || typeof data !== "object") data = {};  // JSON, but not the hub's: a plain notice
  event.waitUntil(self.registration.showNotification(data.title || "Mestni glas", {
    body: data.body || "",
    tag: data.url,  // a later send of the same notice replaces its notification
    data: { url: data.url || "/" }
  }));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  event.waitUntil(clients.openWindow(event.notification.data.url));
});
