/* The drone's page in admin: where it is, its base and its delivery's pickup and dropoff, on a
   small Leaflet map. The data come from the json_script named by the map's data-options (no
   inline script: the admin runs under a Content Security Policy with script-src 'self'). */
(function () {
    "use strict";

    var COLORS = {drone: "#ba2121", base: "#205067", pickup: "#2a7f3f", dropoff: "#7a4fa0"};

    function note(map, text) {
        var control = L.control({position: "bottomleft"});
        control.onAdd = function () {
            var div = L.DomUtil.create("div", "drone-map-note");
            div.textContent = text;
            return div;
        };
        control.addTo(map);
    }

    function init(container) {
        var source = document.getElementById(container.dataset.options);
        if (!source || typeof L === "undefined") {
            return;
        }
        var options = JSON.parse(source.textContent);
        var map = L.map(container, {scrollWheelZoom: false});
        L.control.scale({imperial: false}).addTo(map);
        if (options.tiles) {
            var tiles = L.tileLayer(options.tiles, {
                attribution: options.attribution, maxZoom: 19, referrerPolicy: "strict-origin"
            }).addTo(map);
            tiles.once("tileerror", function () {
                container.classList.add("drone-map-no-tiles");
                note(map, "Map tiles could not be loaded: the points are drawn on a blank background.");
            });
        } else {
            container.classList.add("drone-map-no-tiles");
        }

        var points = [];
        ["base", "pickup", "dropoff", "drone"].forEach(function (name) {
            var place = options[name];
            if (!place) {
                return;
            }
            var latlng = [place.lat, place.lon];
            points.push(latlng);
            L.circleMarker(latlng, {
                radius: name === "drone" ? 8 : 6,
                color: COLORS[name],
                weight: 2,
                fillOpacity: name === "drone" ? 0.9 : 0.5
            }).bindTooltip(place.label, {permanent: name === "drone", direction: "right"}).addTo(map);
        });
        if (options.pickup && options.dropoff) {
            L.polyline([[options.pickup.lat, options.pickup.lon], [options.dropoff.lat, options.dropoff.lon]], {
                color: COLORS.dropoff, weight: 2, dashArray: "4 6"
            }).addTo(map);
        }
        if (points.length > 1) {
            map.fitBounds(points, {padding: [40, 40], maxZoom: 15});
        } else {
            map.setView(points[0], 14);
        }
    }

    document.addEventListener("DOMContentLoaded", function () {
        document.querySelectorAll(".drone-map[data-options]").forEach(init);
    });
})();
