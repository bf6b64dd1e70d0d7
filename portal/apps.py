from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Fabrikam portal"

    def ready(self) -> None:
        from django.contrib import admin

        from portal.logins import throttle_admin_login

        # Admin's sign-in is throttled as the site's is (portal/logins.py).
        throttle_admin_login(admin.site)
