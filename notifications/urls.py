from django.urls import path

from notifications import views

urlpatterns = [
    path("unsubscribe/<str:signed>", views.unsubscribe, name="notifications-unsubscribe"),
]
