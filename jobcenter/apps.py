from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_save


def create_cache_table(using: str = "default", **kwargs: Any) -> None:
    """The database cache's table (settings.CACHES), made with the schema: no extra step."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)


class JobCenterConfig(AppConfig):
    name = "jobcenter"
    verbose_name = "Job Center"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(create_cache_table, sender=self)
        # Every log line of a sync carries the sync's ids, whichever logger writes it.
        from jobcenter.logcontext import install_record_factory

        install_record_factory()
        # The audit log: a record per change to what staff configure, however it is made.
        from jobcenter.audit import recorder

        recorder.connect()
        # A Schedule runs only Job Center's own tasks, however it is saved; the queue takes
        # nothing else, whoever queues it.
        from django_q.signals import pre_enqueue

        from jobcenter.tasks import check_schedule_on_save, guard_enqueue

        pre_save.connect(check_schedule_on_save, sender="django_q.Schedule")
        pre_enqueue.connect(guard_enqueue, dispatch_uid="jobcenter.tasks.guard_enqueue")
