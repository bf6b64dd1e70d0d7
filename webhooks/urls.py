from django.urls import path

from webhooks import api

urlpatterns = [
    path("webhooks", api.EndpointListCreateApi.as_view(), name="webhook-list"),
    path("webhooks/<str:endpoint_id>", api.EndpointDetailApi.as_view(), name="webhook-detail"),
    path(
        "webhooks/<str:endpoint_id>/rotate", api.EndpointRotateApi.as_view(), name="webhook-rotate"
    ),
    path(
        "webhooks/<str:endpoint_id>/attempts",
        api.EndpointAttemptsApi.as_view(),
        name="webhook-attempts",
    ),
    path(
        "webhooks/<str:endpoint_id>/messages/<str:message_id>/resend",
        api.MessageResendApi.as_view(),
        name="webhook-message-resend",
    ),
]
