/* Live pages (jobcenter.admin.live): every few seconds, ask the page's version endpoint
   whether what the page shows changed; when it did, fetch the page's own URL again and
   swap its [data-live-region] elements in place. No reload, no library, no inline
   script (the Content-Security-Policy forbids it).

   The marker (templates/admin/jobcenter/live.html) says what it is doing and holds the
   Pause button; paused, or in a hidden tab, nothing is polled. Rows ticked for an admin
   action hold the list as it is until they are unticked. Keyboard focus inside a
   swapped region moves to the same link or button in the new one. */
(function () {
  "use strict";
  var marker = document.querySelector("[data-live-url]");
  if (!marker || !window.fetch || !window.DOMParser) {
    return;
  }
  var stateText = marker.querySelector(".jc-live-state");
  var toggle = marker.querySelector(".jc-live-toggle");
  var interval = Math.max(1, Number(marker.dataset.liveSeconds) || 2) * 1000;
  // The page's version, or null until the first poll (the page sent its render time).
  var version = marker.dataset.liveVersion || null;
  var since = marker.dataset.liveSince || "";
  var paused = false;
  var stopped = false;
  var busy = false;
  var timer = null;
  var failures = 0;
  var actionListeners = [];

  function show(text, mode) {
    if (stateText.textContent !== text) {
      stateText.textContent = text; // a status region: screen readers hear changes only
    }
    marker.dataset.liveState = mode;
  }

  function schedule(delay) {
    window.clearTimeout(timer);
    timer = null;
    if (!paused && !stopped && !document.hidden) {
      timer = window.setTimeout(tick, delay);
    }
  }

  function stop(text) {
    stopped = true;
    window.clearTimeout(timer);
    toggle.hidden = true;
    show(text, "stopped");
  }

  function held() {
    return document.querySelector(
      "[data-live-region] input.action-select:checked, [data-live-region] #action-toggle:checked"
    ) !== null;
  }

  function get(url, accept) {
    // Resolves to the answer, or to null after stopping: a redirect (to the login page
    // when signed out) or a 403/404 means the page is no longer this staff member's to
    // follow. Other failures reject, and the next poll tries again, later.
    return window
      .fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: accept } })
      .then(function (response) {
        if (response.redirected || response.status === 403 || response.status === 404) {
          stop("Live updates stopped: reload the page");
          return null;
        }
        if (!response.ok) {
          throw new Error(url + " answered " + response.status);
        }
        return response;
      });
  }

  function tick() {
    timer = null;
    if (busy || paused || stopped) {
      return;
    }
    busy = true;
    var url = marker.dataset.liveUrl;
    if (version === null && since) {
      url += "?since=" + encodeURIComponent(since);
    }
    get(url, "application/json")
      .then(function (response) {
        return response && response.json();
      })
      .then(function (answer) {
        if (!answer || stopped) {
          return null;
        }
        failures = 0;
        if (version === null) {
          // First poll of a list or the dashboard: anything changed since the page was
          // rendered (less the commit slack) means fetch it once now.
          version = answer.stale ? "" : answer.version;
        }
        if (answer.version === version) {
          show("Live", "live");
          return null;
        }
        if (held()) {
          show("Live: held while rows are selected", "held");
          return null;
        }
        return refresh(answer.version);
      })
      .catch(function () {
        failures += 1;
        if (!stopped) {
          show("Live: reconnecting", "retrying");
        }
      })
      .then(function () {
        busy = false;
        schedule(failures ? Math.min(interval * Math.pow(2, failures), 60000) : interval);
      });
  }

  function refresh(next) {
    return get(window.location.href, "text/html")
      .then(function (response) {
        return response && response.text();
      })
      .then(function (html) {
        if (!html || paused || stopped) {
          return;
        }
        if (held()) {
          // Rows were ticked while the page was on its way: leave them as they are.
          show("Live: held while rows are selected", "held");
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var swapped = 0;
        document.querySelectorAll("[data-live-region]").forEach(function (old) {
          var name = old.getAttribute("data-live-region");
          var found = fresh.querySelectorAll("[data-live-region]");
          for (var i = 0; i < found.length; i += 1) {
            if (found[i].getAttribute("data-live-region") === name) {
              swap(old, found[i]);
              swapped += 1;
              return;
            }
          }
        });
        var freshMarker = fresh.querySelector("[data-live-url]");
        if (!swapped || !freshMarker) {
          stop("Live updates stopped: reload the page");
          return;
        }
        // A page that carries its own version (the job page) read it with what it shows.
        version = freshMarker.getAttribute("data-live-version") || next;
        rebindActions();
        marker.title = "Updated at " + new Date().toLocaleTimeString();
        marker.dataset.liveUpdates = String(Number(marker.dataset.liveUpdates || 0) + 1);
        show("Live", "live");
      });
  }

  function focusKey(element) {
    return [
      element.tagName,
      element.id || element.getAttribute("name") || element.getAttribute("href") || "",
      element.getAttribute("value") || element.textContent.trim(),
    ].join("\u0000");
  }

  function swap(old, replacement) {
    if (old.outerHTML === replacement.outerHTML) {
      return; // nothing to move: focus and scroll stay exactly as they are
    }
    var node = document.importNode(replacement, true);
    var active = document.activeElement;
    var key = active && active !== document.body && old.contains(active) ? focusKey(active) : null;
    // Open <details> (a table behind a chart) stay open.
    var before = old.querySelectorAll("details");
    var after = node.querySelectorAll("details");
    if (before.length === after.length) {
      after.forEach(function (details, i) {
        details.open = before[i].open;
      });
    }
    old.replaceWith(node);
    if (key !== null) {
      var candidates = node.querySelectorAll(active.tagName);
      for (var i = 0; i < candidates.length; i += 1) {
        if (focusKey(candidates[i]) === key) {
          candidates[i].focus({ preventScroll: true });
          break;
        }
      }
    }
  }

  function rebindActions() {
    // Django's actions.js binds the list's checkboxes when the page loads; new rows need
    // it again. The listeners it puts on the document and the window are removed first,
    // so they do not pile up (nor keep the old rows alive) over hours of updates.
    actionListeners.forEach(function (entry) {
      entry[0].removeEventListener(entry[1], entry[2], entry[3]);
    });
    actionListeners = [];
    var boxes = document.querySelectorAll("tr input.action-select");
    if (typeof window.Actions !== "function" || !boxes.length) {
      return;
    }
    var targets = [document, window];
    targets.forEach(function (target) {
      target.addEventListener = function (type, listener, options) {
        actionListeners.push([target, type, listener, options]);
        EventTarget.prototype.addEventListener.call(target, type, listener, options);
      };
    });
    try {
      window.Actions(boxes);
    } finally {
      targets.forEach(function (target) {
        delete target.addEventListener;
      });
    }
  }

  toggle.addEventListener("click", function () {
    paused = !paused;
    toggle.textContent = paused ? "Resume" : "Pause";
    if (paused) {
      window.clearTimeout(timer);
      show("Paused", "paused");
    } else {
      show("Live", "live");
      schedule(0);
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      window.clearTimeout(timer);
    } else {
      schedule(0);
    }
  });

  marker.hidden = false;
  show("Live", "live");
  schedule(version === null ? 0 : interval);
})();
