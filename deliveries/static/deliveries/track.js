// The tracking page, live: draws the map (Leaflet, our own static files) with the pickup, the
// dropoff, the route and the drone; follows the server-sent events feed the page names
// (data-live-url), or polls its JSON twin when the feed cannot be had; moves the drone, grows the
// timeline and counts the ETAs down every second. The page is complete without this script (the
// server renders it, with an SVG sketch of the route, and refreshes it every 15 s when
// JavaScript is off). Text from the server goes in with textContent only, never as HTML.
(function () {
  "use strict";

  var TERMINAL = ["delivered", "cancelled", "failed"];
  var BEFORE_PICKUP = ["requested", "assigned", "en_route_to_pickup"];
  var FALLBACK_RELOAD_MS = 15000;
  var POLL_MS = 10000;
  var FAILED_WITHOUT_REASON = "We could not complete this delivery.";

  var root = document.getElementById("tracking");
  if (!root) {
    return;
  }
  var labels = JSON.parse(document.getElementById("stage-labels").textContent);
  var data = JSON.parse(document.getElementById("track-data").textContent);
  var stage = document.getElementById("stage");
  var freshness = document.getElementById("freshness");
  var timeline = document.getElementById("timeline");
  var summary = document.getElementById("map-summary");
  // The server's clock minus ours, so that a wrong clock on this device does not skew the
  // countdown (ETAs are the server's times).
  var skew = Number(root.getAttribute("data-server-now")) - Date.now() || 0;

  // --- times, in the site's zone ("07:06 PST"), as the server writes them -------------------

  function formatter(locale, options) {
    options.timeZone = data.time_zone;
    try {
      return new Intl.DateTimeFormat(locale, options);
    } catch (error) { // an unknown zone: the device's own
      delete options.timeZone;
      return new Intl.DateTimeFormat(locale, options);
    }
  }
  var hourMinute = formatter("en-US", {
    hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short"
  });
  var dayMonth = formatter("en-GB", { weekday: "short", day: "numeric", month: "short" });
  var isoDay = formatter("en-CA", { year: "numeric", month: "2-digit", day: "2-digit" });

  function clock(date) {
    var parts = {};
    hourMinute.formatToParts(date).forEach(function (part) { parts[part.type] = part.value; });
    var text = parts.hour + ":" + parts.minute + (parts.timeZoneName ? " " + parts.timeZoneName : "");
    if (isoDay.format(date) !== isoDay.format(new Date(Date.now() + skew))) {
      text = dayMonth.format(date).replace(",", "") + ", " + text;
    }
    return text;
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

  // --- distances -----------------------------------------------------------------------------

  function metres(a, b) { // haversine, [lat, lon] each
    var rad = Math.PI / 180;
    var dLat = (b[0] - a[0]) * rad;
    var dLon = (b[1] - a[1]) * rad;
    var h = Math.sin(dLat / 2) * Math.sin(dLat / 2) +
      Math.cos(a[0] * rad) * Math.cos(b[0] * rad) * Math.sin(dLon / 2) * Math.sin(dLon / 2);
    return 2 * 6371000 * Math.asin(Math.min(1, Math.sqrt(h)));
  }

  function distance(m) {
    return m < 1000 ? Math.round(m / 10) * 10 + " m" : (m / 1000).toFixed(1) + " km";
  }

  // --- the map -------------------------------------------------------------------------------

  function drawMap() {
    var el = document.getElementById("track-map");
    if (!el || !window.L) {
      return null; // the server's SVG sketch stays
    }
    el.textContent = "";
    var map = L.map(el, { scrollWheelZoom: false, zoomSnap: 0.5 });
    // Until the reader moves or zooms the map, it keeps the whole flight and the drone in view.
    var readerMoved = false;
    el.addEventListener("pointerdown", function () { readerMoved = true; });
    el.addEventListener("keydown", function (event) {
      readerMoved = readerMoved || event.key !== "Tab"; // arrows and +/- move the map
    });
    var tiles = null;
    if (data.tiles) {
      var warned = false;
      tiles = L.tileLayer(data.tiles, { maxZoom: 19, attribution: data.attribution })
        .on("tileerror", function () {
          if (warned) {
            return;
          }
          warned = true;
          var note = document.createElement("p");
          note.className = "map-note muted";
          note.textContent = "The street map cannot be loaded right now; the places, the " +
            "route and the drone are drawn without it.";
          el.parentNode.insertBefore(note, el.nextSibling);
        });
    }
    var zones = L.layerGroup();
    // The way to the pickup dashed (and faded once the package is on board), then the way to
    // the dropoff; the drone's track since the page opened, drawn as it comes.
    var toPickup = L.polyline([], {
      color: "#1f5f99", weight: 3, opacity: 0.8, dashArray: "6 8", interactive: false
    });
    var toDropoff = L.polyline([], { color: "#1f5f99", weight: 4, interactive: false });
    var trail = null;

    function pin(end) {
      return L.divIcon({
        className: "pin pin-" + end, html: end === "pickup" ? "P" : "D",
        iconSize: [28, 28], iconAnchor: [14, 14]
      });
    }
    var arrow = document.createElement("span");
    arrow.className = "drone-heading";
    arrow.hidden = true;
    var drone = L.marker(data.pickup, {
      icon: L.divIcon({ className: "pin pin-drone", html: arrow, iconSize: [24, 24], iconAnchor: [12, 12] }),
      title: "The drone", keyboard: false, zIndexOffset: 1000
    });

    function flightBounds() {
      var bounds = L.latLngBounds([data.pickup, data.dropoff]);
      toPickup.getLatLngs().concat(toDropoff.getLatLngs()).forEach(function (point) {
        bounds.extend(point);
      });
      if (map.hasLayer(drone)) {
        bounds.extend(drone.getLatLng());
      }
      return bounds;
    }

    function fit() {
      if (!readerMoved) {
        map.fitBounds(flightBounds(), { paddingTopLeft: [56, 40], paddingBottomRight: [30, 30], maxZoom: 16 });
      }
    }

    // Lines are drawn only on a map with a view (Leaflet), and only with two points or more.
    function setLine(line, points) {
      if (points.length > 1) {
        line.setLatLngs(points);
        if (!map.hasLayer(line)) {
          line.addTo(map);
        }
      } else {
        line.remove();
      }
    }

    function setZones(list) {
      zones.clearLayers();
      list.forEach(function (zone) {
        var label = document.createElement("span");
        label.textContent = "No-fly zone: " + zone.name;
        L.geoJSON(zone.geometry, {
          style: { color: "#b3261e", weight: 2, fillColor: "#b3261e", fillOpacity: 0.2 },
          interactive: true
        }).bindTooltip(label).addTo(zones);
      });
    }

    map.fitBounds(L.latLngBounds([data.pickup, data.dropoff]), { paddingTopLeft: [56, 40], paddingBottomRight: [30, 30], maxZoom: 16 });
    if (tiles) {
      tiles.addTo(map);
    }
    zones.addTo(map);
    var pickup = L.marker(data.pickup, { icon: pin("pickup"), title: "Pickup", keyboard: false })
      .addTo(map);
    var dropoff = L.marker(data.dropoff, { icon: pin("dropoff"), title: "Dropoff", keyboard: false })
      .addTo(map);

    var result = {
      // The route and the zones again (the plan is made when a drone is assigned, and a zone
      // that opens mid-flight changes it).
      plan: function (fresh) {
        pickup.setLatLng(fresh.pickup);
        dropoff.setLatLng(fresh.dropoff);
        setLine(toPickup, fresh.route.to_pickup);
        setLine(toDropoff, fresh.route.to_dropoff);
        setZones(fresh.zones);
        fit();
      },
      move: function (location, status) {
        toPickup.setStyle({ opacity: BEFORE_PICKUP.indexOf(status) !== -1 ? 0.8 : 0.35 });
        if (!location) {
          drone.remove();
          return;
        }
        var at = L.latLng(Number(location.lat), Number(location.lon));
        drone.setLatLng(at);
        if (!map.hasLayer(drone)) {
          drone.addTo(map);
        }
        var heading = Number(location.heading);
        arrow.hidden = location.heading === null || location.heading === undefined || isNaN(heading);
        if (!arrow.hidden) {
          arrow.style.transform = "rotate(" + heading + "deg)";
        }
        if (!trail) {
          trail = L.polyline([at], {
            color: "#1c2733", weight: 2, opacity: 0.6, interactive: false
          }).addTo(map);
        } else if (!trail.getLatLngs()[trail.getLatLngs().length - 1].equals(at)) {
          trail.addLatLng(at);
        }
        if (!map.getBounds().pad(-0.05).contains(at)) {
          fit();
        }
      }
    };
    result.plan(data);
    return result;
  }

  var map = null;
  try {
    map = drawMap();
  } catch (error) {
    map = null; // the page still says where the drone is, in words
    if (window.console) {
      window.console.error("the map could not be drawn", error);
    }
  }

  // --- the page ------------------------------------------------------------------------------

  function show(id, visible) {
    document.getElementById(id).hidden = !visible;
    document.getElementById(id + "-label").hidden = !visible;
  }

  function say(text) {
    freshness.textContent = "";
    if (text) {
      var small = document.createElement("small");
      small.textContent = text;
      freshness.appendChild(small);
    }
  }

  function setEta(which, iso, shown) {
    var id = which + "-eta";
    var at = iso ? new Date(iso) : null;
    var known = at !== null && !isNaN(at.getTime()) && shown;
    show(id, known);
    if (!known) {
      return;
    }
    var time = document.getElementById(id).querySelector("time");
    time.setAttribute("datetime", iso);
    time.textContent = clock(at);
  }

  function nextStop(status) {
    return BEFORE_PICKUP.indexOf(status) !== -1 || status === "at_pickup"
      ? { name: "the pickup", at: data.pickup }
      : { name: "the dropoff", at: data.dropoff };
  }

  function setPosition(location, status) {
    show("position", Boolean(location));
    if (map) {
      map.move(location, status);
    }
    var label = labels[status] || status;
    if (!location) {
      summary.textContent = label + ".";
      return;
    }
    var lat = Number(location.lat);
    var lon = Number(location.lon);
    var stop = nextStop(status);
    var gap = metres([lat, lon], stop.at);
    var away = gap < 30 ? "at " + stop.name : distance(gap) + " from " + stop.name;
    var parts = [away];
    if (typeof location.alt_m === "number") {
      parts.push(Math.round(location.alt_m) + " m up");
    }
    if (typeof location.ground_speed_mps === "number" && location.ground_speed_mps > 0) {
      parts.push(Math.round(location.ground_speed_mps * 3.6) + " km/h");
    }
    var words = parts.join(", ") + " (" + lat.toFixed(5) + ", " + lon.toFixed(5) + ")";
    document.getElementById("position").textContent = words;
    summary.textContent = "The drone is " + words + ". " + label + ".";
  }

  function addToTimeline(status, iso) {
    var items = timeline.querySelectorAll("li");
    var last = items.length ? items[items.length - 1] : null;
    if (last && last.getAttribute("data-status") === status) {
      return;
    }
    var at = iso ? new Date(iso) : null;
    if (at === null || isNaN(at.getTime())) {
      at = new Date(Date.now() + skew);
    }
    timeline.appendChild(timelineItem(status, labels[status] || status, at.toISOString(), clock(at)));
  }

  function timelineItem(status, label, iso, shown) {
    var item = document.createElement("li");
    item.className = "timeline-" + status;
    item.setAttribute("data-status", status);
    var name = document.createElement("span");
    name.className = "timeline-label";
    name.textContent = label;
    var time = document.createElement("time");
    time.setAttribute("datetime", iso);
    time.textContent = shown;
    item.appendChild(name);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(time);
    return item;
  }

  // On a change of stage, the page itself again (same origin): the route the plan drew (a drone
  // assigned, a zone that opened mid-flight) and the timeline with the times the server stored.
  // Parsed, never run or inserted as HTML: the values are copied over with textContent.
  var refreshing = false;
  var refreshAgain = false;

  function copyTimeline(list) {
    var items = list.querySelectorAll("li[data-status]");
    if (items.length < timeline.querySelectorAll("li").length) {
      return; // the server behind the feed for a moment: keep what we have
    }
    var fresh = document.createDocumentFragment();
    for (var i = 0; i < items.length; i++) {
      var time = items[i].querySelector("time");
      var label = items[i].querySelector(".timeline-label");
      fresh.appendChild(timelineItem(
        items[i].getAttribute("data-status"),
        label ? label.textContent : "",
        time ? time.getAttribute("datetime") : "",
        time ? time.textContent : ""
      ));
    }
    timeline.textContent = "";
    timeline.appendChild(fresh);
  }

  function refreshFromPage() {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    if (!window.fetch || !window.DOMParser) {
      return;
    }
    refreshing = true;
    window.fetch(window.location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var block = page.getElementById("track-data");
        if (block) {
          var fresh = JSON.parse(block.textContent);
          data.pickup = fresh.pickup;
          data.dropoff = fresh.dropoff;
          if (map) {
            map.plan(fresh);
          }
        }
        var list = page.getElementById("timeline");
        if (list) {
          copyTimeline(list);
        }
      })
      .catch(function () {}) // the feed goes on; the next stage tries again
      .then(function () {
        refreshing = false;
        if (refreshAgain) {
          refreshAgain = false;
          refreshFromPage();
        }
      });
  }

  function apply(status) {
    if (!status || typeof status.status !== "string") {
      return false;
    }
    var finished = TERMINAL.indexOf(status.status) !== -1;
    if (stage.getAttribute("data-status") !== status.status) {
      // Only a change of stage goes to the live region, not every move of the drone.
      stage.setAttribute("data-status", status.status);
      stage.textContent = labels[status.status] || status.status;
      document.title = "Delivery: " + stage.textContent + " · Fabrikam Drone Delivery";
      addToTimeline(status.status, status.updated_at);
      refreshFromPage();
    }
    setEta("pickup", status.pickup_eta, BEFORE_PICKUP.indexOf(status.status) !== -1);
    setEta("dropoff", status.dropoff_eta, !finished);
    setPosition(finished ? null : status.drone_location, status.status);
    var failed = status.status === "failed";
    show("failure", failed);
    // The feed's reason is already in customer words (deliveries.reasons), or null.
    var reason = status.failure_reason;
    document.getElementById("failure").textContent = failed
      ? (reason || FAILED_WITHOUT_REASON)
      : "";
    var notify = document.getElementById("notify-me");
    if (finished && notify) {
      notify.closest("section").hidden = true;
    }
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

  function updated(finished) {
    say(finished ? "" : "Live: updated at " + clock(new Date(Date.now() + skew)) + ".");
  }

  // The server's values, with the position in words and the distance to the next stop.
  setPosition(
    TERMINAL.indexOf(stage.getAttribute("data-status")) === -1 ? data.drone : null,
    stage.getAttribute("data-status")
  );
  tick();
  window.setInterval(tick, 1000);

  var url = root.getAttribute("data-live-url");
  if (TERMINAL.indexOf(stage.getAttribute("data-status")) !== -1) {
    say("");
    return;
  }

  function reloadLater() {
    say("Live updates are unavailable; this page refreshes every 15 seconds.");
    window.setTimeout(function () { window.location.reload(); }, FALLBACK_RELOAD_MS);
  }

  // Without the feed (no live process, or a proxy that buffers it): the same status as JSON,
  // polled; and when that fails too, the page reloads itself.
  function poll() {
    if (!url || !window.fetch) {
      reloadLater();
      return;
    }
    say("Updating every " + POLL_MS / 1000 + " seconds.");
    var failures = 0;
    function next() {
      window.fetch(url + ".json", { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) {
            throw new Error(String(response.status));
          }
          return response.json();
        })
        .then(function (status) {
          failures = 0;
          var finished = apply(status);
          updated(finished);
          if (!finished) {
            window.setTimeout(next, POLL_MS);
          }
        })
        .catch(function () {
          failures += 1;
          if (failures >= 3) {
            reloadLater();
          } else {
            window.setTimeout(next, POLL_MS);
          }
        });
    }
    next();
  }

  if (!url || !window.EventSource) {
    poll();
    return;
  }
  var source = new EventSource(url);
  var heard = false;
  source.addEventListener("status", function (event) {
    var status;
    try {
      status = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    heard = true;
    var finished = apply(status);
    updated(finished);
    if (finished) {
      source.close(); // the feed ends here; do not reconnect
    }
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      poll(); // refused for good (not a live process, or no such delivery)
    } else if (!heard) {
      source.close(); // never reached: poll instead of retrying for ever
      poll();
    } else {
      say("Reconnecting to live updates…");
    }
  });
})();
