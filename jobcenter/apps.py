from django.apps import AppConfig


class JobCenterConfig(AppConfig):
    name = "jobcenter"
    verbose_name = "Job Center"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobcenter import admin_alerts  # noqa: F401  (registers the alert models' admin)
