from django.apps import AppConfig


class DronesConfig(AppConfig):
    name = "drones"
    verbose_name = "Drone fleet"

    def ready(self) -> None:
        from drones import schema  # noqa: F401 - registers the OpenAPI extension
