// crmcluster dashboard: swap in the sections the controller pushes; send the buttons' actions.
// No framework, no build step; everything comes from this controller.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var toast = document.getElementById("toast");
  var csrfHeader = document.body.getAttribute("data-csrf-header") || "X-CRMCluster-Dashboard";
  var pollTimer = null;

  function setLive(state, text) {
    live.setAttribute("data-state", state);
    live.textContent = text;
  }

  function apply(payload) {
    var sections = (payload && payload.sections) || {};
    Object.keys(sections).forEach(function (id) {
      var el = document.getElementById(id);
      // A form being filled in (the acceptance hold) is not swapped away under the operator.
      var form = el && el.querySelector("form[data-dirty='1']");
      if (el && !form) { el.innerHTML = sections[id]; }
    });
    document.body.setAttribute("data-updated", String(Date.now()));
  }

  function say(text, bad) {
    toast.textContent = text;
    toast.className = bad ? "show bad" : "show";
    window.clearTimeout(say.timer);
    say.timer = window.setTimeout(function () { toast.className = ""; }, 4000);
  }

  function refreshNow() {
    return fetch("/dashboard/fragments", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/"); throw new Error("signed out"); }
        return r.json();
      })
      .then(apply);
  }

  function poll() {
    if (pollTimer) { return; }
    setLive("off", "reconnecting…");
    pollTimer = window.setInterval(function () {
      refreshNow()
        .then(function () { setLive("poll", "live (polling)"); })
        .catch(function () { setLive("off", "controller unreachable"); });
    }, 2000);
  }

  function connect() {
    if (!window.EventSource) { poll(); return; }
    var es = new EventSource("/dashboard/events");
    var failures = 0;
    es.addEventListener("open", function () { failures = 0; setLive("on", "live"); });
    es.addEventListener("sections", function (e) { setLive("on", "live"); apply(JSON.parse(e.data)); });
    es.addEventListener("signed_out", function () { es.close(); window.location.assign("/"); });
    es.addEventListener("error", function () {
      failures += 1;
      setLive("off", "reconnecting…");
      if (failures > 5 || es.readyState === EventSource.CLOSED) { es.close(); poll(); }
    });
  }

  document.addEventListener("click", function (e) {
    var button = e.target.closest ? e.target.closest("button[data-action]") : null;
    if (!button) { return; }
    var headers = { "Accept": "application/json" };
    headers[csrfHeader] = "1";
    var url = button.getAttribute("data-url");
    var init = { method: "POST", credentials: "same-origin", headers: headers };
    var form = button.getAttribute("data-form") ? button.closest("form") : null;
    var noteFrom = button.getAttribute("data-note-from");
    if (form) {
      // The acceptance hold: the ticked rows and the note, as POST /upgrades/{id}/accept's body.
      var rows = [];
      form.querySelectorAll("input[name='rows']:checked").forEach(function (c) { rows.push(c.value); });
      url = form.getAttribute("data-accept-url");
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify({ rows: rows, note: form.querySelector("input[name='note']").value });
    } else if (noteFrom) {  // a confirmation carries the operator's note
      var input = document.getElementById(noteFrom);
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify({ note: input ? input.value : "" });
    }
    button.disabled = true;
    fetch(url, init)
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) {
            var msg = body && body.error ? body.error.message : "HTTP " + r.status;
            say(button.getAttribute("data-action") + ": " + msg, true);
          } else {
            say(button.getAttribute("data-action") + ": done");
          }
        });
      })
      .catch(function (err) { say(String(err), true); })
      .then(function () {
        button.disabled = false;
        if (form) { form.removeAttribute("data-dirty"); }
        return refreshNow();
      })
      .catch(function () {});
  });

  // Signing out ends the session on the controller; it needs the dashboard's header, like every
  // unsafe request made with the cookie (a page of another site cannot send it).
  var signout = document.getElementById("signout");
  if (signout) {
    signout.addEventListener("click", function () {
      var headers = { "Accept": "application/json" };
      headers[csrfHeader] = "1";
      fetch("/dashboard/signout", { method: "POST", credentials: "same-origin", headers: headers })
        .catch(function () {})
        .then(function () { window.location.assign("/"); });
    });
  }

  document.addEventListener("input", function (e) {
    var form = e.target.closest ? e.target.closest("form.acceptance") : null;
    if (form) { form.setAttribute("data-dirty", "1"); }
  });

  connect();
})();
