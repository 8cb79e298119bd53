"""The codebase's own rules, checked: one owner of a push's state, no citation outside the repository,
and a database made before the restructure migrates with its data (tables kept, nothing copied)."""

from __future__ import annotations

import ast
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ["adsync", "tracking", "emulator", "config", "tests", "bench"]
# Push columns that make up its state: only adsync/push/transitions.py may write them.
STATE_FIELDS = {"status", "attempts", "next_attempt_at", "error_code", "error_symbol", "error_message"}
STATE_OWNER = ROOT / "adsync" / "push" / "transitions.py"


def python_files(*dirs: str) -> list[Path]:
    return [path for d in dirs for path in (ROOT / d).rglob("*.py") if ".venv" not in path.parts]


def writes_push_state(tree: ast.AST) -> list[int]:
    """Lines that write a push's state: `.update(status=...)` on a Push queryset, or `push.status = ...`."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
            names = {kw.arg for kw in node.keywords}
            if names & STATE_FIELDS and "Push" in ast.unparse(node.func.value) + ast.unparse(node):
                lines.append(node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(element, ast.Attribute) and element.attr in STATE_FIELDS and \
                        ast.unparse(element.value) in ("push", "p", "row"):
                    lines.append(node.lineno)
    return lines


def test_only_the_transitions_module_writes_a_pushs_state():
    offenders = {}
    for path in python_files("adsync", "tracking"):
        if path == STATE_OWNER or "migrations" in path.parts:
            continue
        lines = writes_push_state(ast.parse(path.read_text()))
        if lines:
            offenders[str(path.relative_to(ROOT))] = lines
    assert offenders == {}


def test_the_state_check_itself_finds_a_write():
    """Guard for the test above: it must notice the kind of line it forbids."""
    code = "Push.objects.filter(pk=1).update(status=Push.SENT)\npush.status = Push.ERROR\n"
    assert sorted(writes_push_state(ast.parse(code))) == [1, 2]


def test_code_cites_no_file_outside_the_repository():
    """Comments cite docs/microsoft-api.md or Microsoft's public pages, never a path outside the repository."""
    outside = re.compile(r"\.\./shared|microsoft-ads-api\.md|(?<!RFC 7636 )(?<!\.md )§\d")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in python_files(*CODE_DIRS)
             for n, line in enumerate(path.read_text().splitlines(), start=1)
             if outside.search(line) and path.name != "test_architecture.py"]
    assert found == []


def test_every_anchor_code_cites_exists_in_the_microsoft_api_doc():
    doc = (ROOT / "docs" / "microsoft-api.md").read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"', doc))
    anchors |= {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", doc, re.M)}
    cited = {(str(path.relative_to(ROOT)), anchor) for path in python_files(*CODE_DIRS)
             for anchor in re.findall(r"docs/microsoft-api\.md#([a-z0-9-]+)", path.read_text())}
    cited |= {(str(path.relative_to(ROOT)), anchor) for path in python_files(*CODE_DIRS)
              for line in path.read_text().splitlines() if "docs/microsoft-api.md#" in line
              for anchor in re.findall(r"(?:,| and| to) #([a-z0-9-]+)", line)}
    assert {item for item in cited if item[1] not in anchors} == set()


def test_docs_cite_no_file_outside_the_repository_and_their_anchors_exist():
    """README and docs/ link docs/microsoft-api.md sections, never the reference outside the repository."""
    doc = (ROOT / "docs" / "microsoft-api.md").read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"', doc))
    anchors |= {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", doc, re.M)}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    outside = [f"{page.name}:{n}" for page in pages for n, line in enumerate(page.read_text().splitlines(), 1)
               if "../shared" in line or "microsoft-ads-api.md" in line]
    broken = {(page.name, a) for page in pages for a in re.findall(r"microsoft-api\.md#([a-z0-9-]+)", page.read_text())
              if a not in anchors}
    assert (outside, broken) == ([], set())


# --- A database made before the restructure migrates, data and all ------------------------------------

BEFORE = [("adsync", "0006_sync_log_and_ingest_indexes"), ("tracking", "0002_hit_lane")]


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_restructure_keeps_its_data():
    """Migrate back to the last migrations before the restructure, write rows as that code did, then
    migrate forward: the inbox keeps its table and rows, and connections get health fields from their text."""
    executor = MigrationExecutor(db_connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    now = timezone.now()
    site = old.get_model("adsync", "Site").objects.create(name="Old shop", key="pk_old")
    connection = old.get_model("adsync", "Connection").objects.create(
        site=site, status="active", account_id="1", customer_id="2",
        last_error="106 UserIsNotAuthorized: The user does not represent a authorized developer.", last_error_at=now)
    refresh = old.get_model("adsync", "Connection").objects.create(
        site=site, status="active", last_error="Token refresh failed, will retry: invalid_client: AADSTS7000215",
        last_error_at=now)
    old.get_model("tracking", "Hit").objects.create(site_id=site.pk, kind="click", lane=3,
                                                    payload={"visitor_id": "v1", "msclkid": "a" * 32, "url": ""})

    executor = MigrationExecutor(db_connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from adsync.connections import health
    from adsync.models import Connection, Hit

    hit = Hit.objects.get()
    assert (Hit._meta.db_table, hit.site_id, hit.lane, hit.payload["visitor_id"]) == ("tracking_hit", site.pk, 3, "v1")
    moved = Connection.objects.get(pk=connection.pk)
    assert (moved.last_error_operation, moved.last_error_kind, moved.last_error_code) == ("upload", "no_access", "106")
    assert health.card_state(moved, newest_sent_at=now - timedelta(hours=1)).label == "Failing: no access to this account"
    app = Connection.objects.get(pk=refresh.pk)
    assert (app.last_error_operation, app.last_error_code) == ("token_refresh", "invalid_client")
    assert health.card_state(app).label == "Failing: Microsoft rejected the app's client ID or secret"
