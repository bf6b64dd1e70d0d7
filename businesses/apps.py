from django.apps import AppConfig


class BusinessesConfig(AppConfig):
    name = "businesses"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from businesses import schema  # noqa: F401 - registers the OpenAPI extension
