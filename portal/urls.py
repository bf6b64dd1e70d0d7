from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from deliveries import views as delivery_views
from notifications import views as notification_views
from portal import health

urlpatterns = [
    path("healthz/live", health.live, name="healthz-live"),
    path("healthz/ready", health.ready, name="healthz-ready"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include("deliveries.urls")),
    path("api/v1/", include("drones.urls")),
    path("api/v1/", include("airspace.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("track/<slug:token>", delivery_views.track, name="track"),
    path("track/<slug:token>/notify", notification_views.track_notify, name="track-notify"),
    path("notifications/", include("notifications.urls")),
    path("live/", include("portal.live_urls")),
    path("admin/", admin.site.urls),
]
