/* The schedule page's map (Leaflet, served from our own static files): a click sets the pickup,
   then the dropoff; the markers drag; the fields and the map follow each other. The form works
   without it (known places, typed coordinates). On the quote page the map only shows the trip. */
(function () {
  "use strict";
  var el = document.getElementById("schedule-map");
  var configEl = document.getElementById("map-config");
  if (!el || !configEl || !window.L) { return; }
  var config = JSON.parse(configEl.textContent);
  el.textContent = "";
  var map = L.map(el, { scrollWheelZoom: false }).setView(config.center, 13);
  if (config.tiles) {
    var warned = false;
    L.tileLayer(config.tiles, { maxZoom: 19, attribution: config.attribution })
      .on("tileerror", function () {
        if (warned) { return; }
        warned = true;
        var note = document.createElement("p");
        note.className = "map-note muted";
        note.textContent = "The street map cannot be loaded right now; the places, the route and the no-fly zones still show.";
        el.parentNode.insertBefore(note, el.nextSibling);
      })
      .addTo(map);
  }
  config.zones.forEach(function (zone) {
    var label = document.createElement("span");
    label.textContent = "No-fly zone: " + zone.name;
    L.geoJSON(zone.geometry, {
      style: { color: "#b3261e", weight: 2, fillColor: "#b3261e", fillOpacity: 0.25 },
      interactive: true
    }).bindTooltip(label).addTo(map);
  });

  function pin(end) {
    return L.divIcon({ className: "pin pin-" + end, html: end === "pickup" ? "P" : "D", iconSize: [28, 28], iconAnchor: [14, 14] });
  }
  var markers = {};
  var line = L.polyline([], { color: "#1f5f99", weight: 3, dashArray: "8 6" }).addTo(map);

  function drawLine() {
    if (markers.pickup && markers.dropoff) {
      line.setLatLngs([markers.pickup.getLatLng(), markers.dropoff.getLatLng()]);
    }
  }
  function fit() {
    map.invalidateSize();
    var points = Object.keys(markers).map(function (k) { return markers[k].getLatLng(); });
    if (points.length === 2) { map.fitBounds(L.latLngBounds(points), { padding: [40, 40], maxZoom: 15 }); }
    else if (points.length === 1) { map.setView(points[0], Math.max(map.getZoom(), 14)); }
  }
  function place(end, latlng, draggable, onMove) {
    if (markers[end]) { markers[end].setLatLng(latlng); }
    else {
      markers[end] = L.marker(latlng, { icon: pin(end), draggable: draggable, keyboard: draggable, title: end === "pickup" ? "Pickup" : "Dropoff" }).addTo(map);
      if (onMove) { markers[end].on("dragend", function () { onMove(end, markers[end].getLatLng()); }); }
    }
    drawLine();
  }
  function parsePair(text) {
    var parts = (text || "").split(",").map(parseFloat);
    return parts.length === 2 && !isNaN(parts[0]) && !isNaN(parts[1]) ? L.latLng(parts[0], parts[1]) : null;
  }

  if (el.dataset.readonly === "true") {
    ["pickup", "dropoff"].forEach(function (end) {
      var at = parsePair(el.dataset[end]);
      if (at) { place(end, at, false, null); }
    });
    fit();
    return;
  }

  var form = document.getElementById("schedule-form");
  var modeBox = document.getElementById("map-mode");
  var places = {};
  config.places.forEach(function (p) { places[p.slug] = p; });
  function input(end, name) { return form.querySelector("[name=" + end + "_" + name + "]"); }
  function mode() { var checked = form.querySelector("input[name=map_mode]:checked"); return checked ? checked.value : "pickup"; }
  function setMode(end) { var radio = form.querySelector("input[name=map_mode][value=" + end + "]"); if (radio) { radio.checked = true; } }
  function write(end, latlng) {
    input(end, "lat").value = latlng.lat.toFixed(6);
    input(end, "lon").value = latlng.lng.toFixed(6);
    input(end, "place").value = "";
  }
  function read(end) {
    var lat = parseFloat(input(end, "lat").value), lon = parseFloat(input(end, "lon").value);
    if (!isNaN(lat) && !isNaN(lon)) { return L.latLng(lat, lon); }
    var known = places[input(end, "place").value];
    return known ? L.latLng(known.lat, known.lon) : null;
  }
  modeBox.hidden = false;
  ["pickup", "dropoff"].forEach(function (end) {
    var at = read(end);
    if (at) { place(end, at, true, write); }
    ["lat", "lon"].forEach(function (name) {
      input(end, name).addEventListener("change", function () {
        var at = read(end);
        if (at) { place(end, at, true, write); fit(); }
      });
    });
    input(end, "place").addEventListener("change", function () {
      var known = places[input(end, "place").value];
      if (!known) { return; }
      input(end, "lat").value = known.lat;
      input(end, "lon").value = known.lon;
      if (!input(end, "address").value) { input(end, "address").value = known.name; }
      place(end, L.latLng(known.lat, known.lon), true, write);
      fit();
    });
  });
  if (markers.pickup && !markers.dropoff) { setMode("dropoff"); }
  fit();
  map.on("click", function (event) {
    var end = mode();
    write(end, event.latlng);
    place(end, event.latlng, true, write);
    if (end === "pickup" && !markers.dropoff) { setMode("dropoff"); }
  });
})();
