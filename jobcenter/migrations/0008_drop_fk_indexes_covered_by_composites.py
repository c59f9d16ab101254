"""Drop the foreign keys' own indexes where a composite index already leads with them.

Django gives every ForeignKey an index of its own. Three of them only repeat the first
column of another: `Job.account` (the unique account/kind/external id constraint and
job_account_created), `JobSnapshot.job` (snapshot_job_observed) and `JobError.job` (the
unique job/position constraint). Each sync insert paid for those b-trees (a job, its
snapshot and about three error records per failed job) and no query needs them.

The state takes `db_index=False`; the database drops the indexes by name, found by
introspection: Django's own AlterField would copy the whole table on SQLite, which at
millions of snapshots is minutes of a locked database for the sake of one DROP INDEX.
"""

from django.db import migrations, models

# (model, foreign key) whose single-column index goes.
COVERED = (("job", "account"), ("jobsnapshot", "job"), ("joberror", "job"))


def _single_column_indexes(schema_editor, model, column: str) -> list[str]:
    """Names of the plain (not unique) indexes on exactly `column` of `model`'s table."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return [
        name
        for name, info in constraints.items()
        if info["index"]
        and not info["unique"]
        and not info["primary_key"]
        and info["columns"] == [column]
    ]


def drop(apps, schema_editor):
    for model_name, field_name in COVERED:
        model = apps.get_model("jobcenter", model_name)
        column = model._meta.get_field(field_name).column
        for name in _single_column_indexes(schema_editor, model, column):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))


def create(apps, schema_editor):
    for model_name, field_name in COVERED:
        model = apps.get_model("jobcenter", model_name)
        field = model._meta.get_field(field_name)
        if not _single_column_indexes(schema_editor, model, field.column):
            schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))


class Migration(migrations.Migration):
    dependencies = [
        ("jobcenter", "0007_error_text_search_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop, create)],
            state_operations=[
                migrations.AlterField(
                    model_name="job",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.PROTECT,
                        related_name="jobs",
                        to="jobcenter.provideraccount",
                    ),
                ),
                migrations.AlterField(
                    model_name="joberror",
                    name="job",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="errors",
                        to="jobcenter.job",
                    ),
                ),
                migrations.AlterField(
                    model_name="jobsnapshot",
                    name="job",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="snapshots",
                        to="jobcenter.job",
                    ),
                ),
            ],
        ),
    ]
