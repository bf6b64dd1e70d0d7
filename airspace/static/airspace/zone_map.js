/* The no-fly zone map in admin: Leaflet, with Leaflet.draw through django-leaflet's
   L.GeometryField, which keeps the drawn polygons in the form's textarea as GeoJSON
   (a MultiPolygon). The options come from the json_script beside each map. */
(function () {
    "use strict";

    function note(map, text) {
        var control = L.control({position: "bottomleft"});
        control.onAdd = function () {
            var div = L.DomUtil.create("div", "airspace-map-note");
            div.textContent = text;
            return div;
        };
        control.addTo(map);
    }

    function init(container) {
        var options = JSON.parse(document.getElementById(container.id + "-options").textContent);
        var textarea = document.getElementById(options.field);
        var map = L.map(container, {center: options.center, zoom: options.zoom});
        L.control.scale({imperial: false}).addTo(map);

        if (options.tiles) {
            var tiles = L.tileLayer(options.tiles, {
                attribution: options.attribution, maxZoom: 19, referrerPolicy: "strict-origin"
            }).addTo(map);
            tiles.once("tileerror", function () {
                container.classList.add("airspace-no-tiles");
                note(map, "Map tiles could not be loaded: draw on the blank background, or paste GeoJSON below.");
            });
        } else {
            container.classList.add("airspace-no-tiles");
        }

        // What is around the zone, for bearings: the other active zones and the drone bases.
        L.geoJSON(options.context, {
            style: {color: "#666", weight: 1, dashArray: "4 4", fillOpacity: 0.08},
            pointToLayer: function (feature, latlng) {
                return L.circleMarker(latlng, {radius: 5});
            },
            onEachFeature: function (feature, layer) {
                var isBase = feature.geometry.type === "Point";
                if (isBase) {
                    layer.setStyle({color: "#205067", weight: 2, dashArray: null, fillOpacity: 0.9});
                }
                // Bases are few: always named. Zones say their name on hover.
                layer.bindTooltip(feature.properties.label, {permanent: isBase, direction: "right"});
            }
        }).addTo(map);

        var field = new L.GeometryField({
            fieldid: options.field,
            geom_type: "MultiPolygon",
            modifiable: options.modifiable,
            precision: 6
        });
        try {
            field.addTo(map);
        } catch (error) {
            note(map, "The zone's GeoJSON (below) cannot be read: correct it, or draw the zone again.");
        }
        if (field.drawnItems.getLayers().length > 0) {
            // The zone with some of what is around it.
            map.fitBounds(field.drawnItems.getBounds().pad(0.5), {maxZoom: 15});
        } else if (options.bounds) {
            map.fitBounds(options.bounds, {maxZoom: 13, padding: [40, 40]});
        }

        // GeoJSON pasted into the textarea replaces what is drawn.
        textarea.addEventListener("change", function () {
            field.drawnItems.clearLayers();
            try {
                field.load();
            } catch (error) {
                note(map, "The GeoJSON below cannot be read: " + error.message);
            }
        });
    }

    document.addEventListener("DOMContentLoaded", function () {
        document.querySelectorAll(".airspace-zone-map").forEach(init);
    });
})();
