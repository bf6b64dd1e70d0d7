from django.apps import AppConfig


class AirspaceConfig(AppConfig):
    name = "airspace"
    verbose_name = "Airspace"
