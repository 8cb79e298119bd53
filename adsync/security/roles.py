"""Two staff roles as Django groups: operators run sync actions, viewers only look.

- viewers: view permission on every adsync and task-queue model, nothing else.
- operators: the same, plus `adsync.operate_connection` (every admin action that changes
  state or queues work: Resync, Reconnect, Send test conversion, Replay, Refresh goal list...)
  and editing the card's goal mappings.

`manage.py setup_roles` (and `seed_demo`) calls ensure_roles(); it is idempotent and resets
both groups to exactly these permissions. Superusers have every permission anyway.
"""

from __future__ import annotations

from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.http import HttpRequest

OPERATORS = "operators"
VIEWERS = "viewers"
OPERATE_PERMISSION = "adsync.operate_connection"
VIEWED_APPS = ("adsync", "django_q")
OPERATOR_CODENAMES = ("operate_connection", "change_connection", "add_goalmapping", "change_goalmapping",
                      "delete_goalmapping")
# Admin actions that change nothing and queue nothing; every other action needs OPERATE_PERMISSION.
READ_ONLY_ACTIONS = frozenset({"validate_dry_run"})


def _view_permissions():
    return Permission.objects.filter(content_type__app_label__in=VIEWED_APPS, codename__startswith="view_")


@transaction.atomic
def ensure_roles() -> dict[str, int]:
    """Create or reset the two groups; returns {group name: number of permissions}."""
    for label in VIEWED_APPS:
        # Permissions are created after migrate; make sure they exist even on a fresh database.
        create_permissions(apps.get_app_config(label), verbosity=0)
    viewing = list(_view_permissions())
    operating = list(Permission.objects.filter(content_type__app_label="adsync", codename__in=OPERATOR_CODENAMES))
    outcome = {}
    for name, permissions in ((VIEWERS, viewing), (OPERATORS, viewing + operating)):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(permissions)
        outcome[name] = len(permissions)
    return outcome


class OperatorActionsMixin:
    """For ModelAdmins: `@admin.action(permissions=["operate"])` lets only operators (and superusers) run it.

    Django hides such an action from everyone else's changelist and refuses a forged POST.
    """

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(OPERATE_PERMISSION)
