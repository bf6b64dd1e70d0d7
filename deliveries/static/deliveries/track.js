// The tracking page, live: follows the server-sent events feed the page names (data-live-url)
// and counts the ETAs down every second. The page is complete without this script (the server
// renders it, and refreshes it every 15 s when JavaScript is off); no library, no build step.
(function () {
  "use strict";

  var TERMINAL = ["delivered", "cancelled", "failed"];
  var FALLBACK_RELOAD_MS = 15000;

  var root = document.getElementById("tracking");
  if (!root) {
    return;
  }
  var labels = JSON.parse(document.getElementById("stage-labels").textContent);
  var stage = document.getElementById("stage");
  var freshness = document.getElementById("freshness");
  // The server's clock minus ours, so that a wrong clock on this device does not skew the
  // countdown (ETAs are the server's times).
  var skew = Number(root.getAttribute("data-server-now")) - Date.now() || 0;

  function show(id, visible) {
    document.getElementById(id).hidden = !visible;
    document.getElementById(id + "-label").hidden = !visible;
  }

  function say(text) {
    freshness.textContent = "";
    var small = document.createElement("small");
    small.textContent = text;
    freshness.appendChild(small);
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function duration(ms) {
    var seconds = Math.max(0, Math.round(ms / 1000));
    var hours = Math.floor(seconds / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    var rest = seconds % 60;
    if (hours > 0) {
      return hours + " h " + minutes + " min";
    }
    if (minutes > 0) {
      return minutes + " min " + rest + " s";
    }
    return rest + " s";
  }

  function setEta(which, iso, finished) {
    var id = which + "-eta";
    var at = iso ? new Date(iso) : null;
    var known = at !== null && !isNaN(at.getTime()) && !finished;
    show(id, known);
    if (!known) {
      return;
    }
    var time = document.getElementById(id).querySelector("time");
    time.setAttribute("datetime", iso);
    time.textContent = clock(at);
  }

  // The sketch of the route (an SVG drawn by the server): the drone's dot moves on it, placed
  // with the same flat projection the server drew it in.
  var sketch = document.getElementById("route-sketch");

  function moveDot(location) {
    if (!sketch) {
      return;
    }
    var dot = document.getElementById("route-drone");
    if (!location) {
      dot.setAttribute("visibility", "hidden");
      return;
    }
    var lat0 = Number(sketch.getAttribute("data-lat-max"));
    var lon0 = Number(sketch.getAttribute("data-lon-min"));
    var k = Number(sketch.getAttribute("data-cos"));
    var scale = Number(sketch.getAttribute("data-scale"));
    dot.setAttribute("cx", ((Number(location.lon) - lon0) * k * scale).toFixed(1));
    dot.setAttribute("cy", ((lat0 - Number(location.lat)) * scale).toFixed(1));
    dot.setAttribute("visibility", "visible");
  }

  function setPosition(location) {
    show("position", Boolean(location));
    moveDot(location);
    if (!location) {
      return;
    }
    var parts = [Number(location.lat).toFixed(5) + ", " + Number(location.lon).toFixed(5)];
    if (typeof location.alt_m === "number") {
      parts.push(Math.round(location.alt_m) + " m up");
    }
    if (typeof location.ground_speed_mps === "number" && location.ground_speed_mps > 0) {
      parts.push(Math.round(location.ground_speed_mps * 3.6) + " km/h");
    }
    document.getElementById("position").textContent = parts.join(", ");
  }

  function apply(status) {
    var finished = TERMINAL.indexOf(status.status) !== -1;
    if (stage.getAttribute("data-status") !== status.status) {
      // Only a change of stage goes to the live region, not every move of the drone.
      stage.setAttribute("data-status", status.status);
      stage.textContent = labels[status.status] || status.status;
      document.title = "Delivery: " + stage.textContent + " · Fabrikam Drone Delivery";
    }
    setEta("pickup", status.pickup_eta, finished);
    setEta("dropoff", status.dropoff_eta, finished);
    setPosition(finished ? null : status.drone_location);
    show("failure", Boolean(status.failure_reason));
    document.getElementById("failure").textContent = status.failure_reason || "";
    tick();
    return finished;
  }

  function tick() {
    var now = Date.now() + skew;
    var counters = root.querySelectorAll("[data-countdown-for]");
    for (var i = 0; i < counters.length; i++) {
      var counter = counters[i];
      var time = document.getElementById(counter.getAttribute("data-countdown-for") + "-eta")
        .querySelector("time");
      var at = Date.parse(time.getAttribute("datetime"));
      if (isNaN(at)) {
        counter.textContent = "";
      } else if (at > now) {
        counter.textContent = "(" + counter.getAttribute("data-prefix") + " " +
          duration(at - now) + ")";
      } else {
        counter.textContent = "(any moment now)";
      }
    }
  }

  function reloadLater() {
    say("Live updates are unavailable; this page refreshes every 15 seconds.");
    window.setTimeout(function () { window.location.reload(); }, FALLBACK_RELOAD_MS);
  }

  tick();
  window.setInterval(tick, 1000);

  var url = root.getAttribute("data-live-url");
  if (TERMINAL.indexOf(stage.getAttribute("data-status")) !== -1) {
    say("");
    return;
  }
  if (!url || !window.EventSource) {
    reloadLater();
    return;
  }
  var source = new EventSource(url);
  source.addEventListener("status", function (event) {
    var status;
    try {
      status = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    var finished = apply(status);
    say(finished ? "" : "Live: updated at " + new Date().toLocaleTimeString() + ".");
    if (finished) {
      source.close(); // the feed ends here; do not reconnect
    }
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      reloadLater(); // refused for good (not a live process, or no such delivery)
    } else {
      say("Reconnecting to live updates…");
    }
  });
})();
