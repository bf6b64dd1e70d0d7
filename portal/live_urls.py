"""The live feeds, all under /live/ so that one ingress rule sends them to the `live` process."""

from django.urls import path

from deliveries import stream

urlpatterns = [
    path("deliveries/<str:delivery_id>", stream.delivery_feed, name="live-delivery"),
    # Before the feed's pattern, which would take `<token>.json` for a token.
    path("track/<slug:token>.json", stream.track_status, name="live-track-status"),
    path("track/<slug:token>", stream.track_feed, name="live-track"),
]
