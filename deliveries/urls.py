from django.urls import path

from deliveries import api

urlpatterns = [
    path("quotes", api.QuoteCreateApi.as_view(), name="quote-create"),
    path("deliveries", api.DeliveryListCreateApi.as_view(), name="delivery-list"),
    path("deliveries/<str:delivery_id>", api.DeliveryDetailApi.as_view(), name="delivery-detail"),
    path(
        "deliveries/<str:delivery_id>/status",
        api.DeliveryStatusApi.as_view(),
        name="delivery-status",
    ),
    path(
        "deliveries/<str:delivery_id>/cancel",
        api.DeliveryCancelApi.as_view(),
        name="delivery-cancel",
    ),
]
