"""Alerts: rules evaluated after every sync and every minute, delivered by email or webhook.

Why here and not in each provider's console: one place sees every provider's jobs, so one
place can say "a product import failed", "an export has waited two hours" or "this
account has not synced since its key was revoked".

The modules, from the entry points down (each imports only those below it):

- `evaluation`: `evaluate_after_sync`, `evaluate_periodic`; one rule's new events become
  deliveries (one message each, or a digest);
- `ledger`: which jobs and accounts meet a rule, recorded by one INSERT ... SELECT;
- `messages`: the structured event webhooks receive and the texts people read;
- `rules`: which rules apply to which accounts, quiet hours, channel validation;
- `delivery`: one attempt per django-q2 task, the attempt log, retries with backoff;
- `webhooks`: the POST signed the Standard Webhooks way, the secret's key, allowed URLs;
- `channels`: an attempt's outcome, email, a channel's displayable destination;
- `defaults`: the default rules `setup_schedules` creates.

The django-q2 task is `jobcenter.tasks.deliver_alert`. `deliver` stays importable from
here because task rows queued before it moved name "jobcenter.alerts.deliver".
"""

from jobcenter.alerts.delivery import deliver

__all__ = ["deliver"]
