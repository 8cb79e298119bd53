"""Which connections a command works on: all, or those of one site, or one connection (`--site`, `--connection`)."""

from django.core.management.base import CommandError

from adsync.models import Connection, Site


def select_connections(site_key: str | None, connection_id: int | None) -> list[Connection]:
    """Every connection, narrowed by the options; an unknown site key or id is a CommandError naming it."""
    connections = Connection.objects.select_related("site").order_by("pk")
    if site_key:
        if not Site.objects.filter(key=site_key).exists():
            raise CommandError(f"No site with key {site_key!r}.")
        connections = connections.filter(site__key=site_key)
    if connection_id is not None:
        if not Connection.objects.filter(pk=connection_id).exists():
            raise CommandError(f"No connection with id {connection_id}.")
        connections = connections.filter(pk=connection_id)
    return list(connections)
