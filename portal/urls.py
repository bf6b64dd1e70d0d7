from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from deliveries import views as delivery_views
from notifications import views as notification_views
from portal import health, views, webhook_views
from portal.forms import EmailAuthenticationForm
from portal.logins import ThrottledLoginView

site = [
    path("", views.home, name="home"),
    path("signup", views.signup, name="signup"),
    path(
        "login",
        ThrottledLoginView.as_view(
            template_name="portal/login.html",
            authentication_form=EmailAuthenticationForm,
            redirect_authenticated_user=True,
            extra_context={"nav": "login"},
        ),
        name="login",
    ),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password-reset",
        views.PasswordResetView.as_view(),
        name="password_reset",
    ),
    path(
        "password-reset/sent",
        auth_views.PasswordResetDoneView.as_view(template_name="portal/password_reset_sent.html"),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="portal/password_reset_confirm.html"
        ),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="portal/password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
    path("track", views.track_lookup, name="track-lookup"),
    path("deliveries/", views.deliveries_list, name="site-deliveries"),
    path("deliveries/new", views.schedule, name="site-schedule"),
    path("deliveries/<str:delivery_id>", views.delivery_detail, name="site-delivery"),
    path("deliveries/<str:delivery_id>/cancel", views.delivery_cancel, name="site-delivery-cancel"),
    path("business/keys", views.api_keys, name="site-keys"),
    path("business/keys/<str:prefix>/revoke", views.api_key_revoke_view, name="site-key-revoke"),
    path("business/webhooks", webhook_views.webhooks, name="site-webhooks"),
    path("business/webhooks/<str:endpoint_id>", webhook_views.webhook_detail, name="site-webhook"),
    path(
        "business/webhooks/<str:endpoint_id>/delete",
        webhook_views.webhook_delete,
        name="site-webhook-delete",
    ),
    path(
        "business/webhooks/<str:endpoint_id>/messages/<str:message_id>/resend",
        webhook_views.webhook_resend,
        name="site-webhook-resend",
    ),
]

# The API first: Django tries the patterns in order, and the busiest requests (deliveries,
# telemetry) then match without walking the site's pages first.
urlpatterns = [
    path("api/v1/", include("deliveries.urls")),
    path("api/v1/", include("drones.urls")),
    path("api/v1/", include("airspace.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    *site,
    path("favicon.ico", views.favicon, name="favicon"),
    path("healthz/live", health.live, name="healthz-live"),
    path("healthz/ready", health.ready, name="healthz-ready"),
    path("healthz/dependencies", health.dependencies, name="healthz-dependencies"),
    path("track/<slug:token>", delivery_views.track, name="track"),
    path("track/<slug:token>/notify", notification_views.track_notify, name="track-notify"),
    path("notifications/", include("notifications.urls")),
    path("live/", include("portal.live_urls")),
    path("admin/", admin.site.urls),
]
