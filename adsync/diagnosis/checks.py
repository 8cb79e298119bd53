"""The troubleshooting checklist, one function per check, in the order an expert works through it.

Each check returns a CheckResult: pass / warn / fail (or "not checked" when an earlier check took
away what it needs), the evidence it saw, and ONE remedy with the link to the page that fixes it
(a Microsoft help page or adsync's own admin page). Checks 1-4 and 9 ask Microsoft; 5-8 read
adsync's own rows. A MicrosoftAdsError is a finding, never a crash: it lands in the evidence verbatim.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit

from django.db.models import Count, F, Q, Sum
from django.utils.timesince import timesince

from adsync.conf import conf
from adsync.connections import health, tokens
from adsync.diagnosis import reconciliation
from adsync.diagnosis.context import Context, result
from adsync.links import card_url, connection_page_url, site_url, sync_log_url
from adsync.microsoft.campaign import CampaignClient
from adsync.microsoft.customer import CustomerClient
from adsync.microsoft.errors import Kind, MicrosoftAdsError, remedy_hint
from adsync.models import CampaignInsight, CheckResult, Click, Connection, Conversion, Push
from adsync.models.diagnosis import FAIL, PASS, SKIP, WARN
from adsync.notify.digest import MIN_PUSHES_FOR_SHARE, error_classes
from adsync.push import goals
from adsync.push.goals import GoalBook

# Microsoft's help pages (the same text as help.ads.microsoft.com), as cited in docs/microsoft-api.md.
HELP_AUTO_TAGGING = "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_proc_microsoftclickid"
HELP_CLICK_ID = "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_conc_microsoftclickidcheck"
HELP_OFFLINE_GOALS = "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_conc_uetv2offlineconversion"
HELP_ENHANCED = "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_conc_uet_enhancedconversions"
GUIDE_DEVELOPER_TOKEN = "https://learn.microsoft.com/en-us/advertising/guides/get-started?view=bingads-13"
SANDBOX_DEVELOPER_TOKEN = "BBD37VB98"  # Microsoft's universal sandbox token (docs/microsoft-api.md#request-headers)

MICROSOFT_WINDOW = timedelta(days=90)  # clicks older than this cannot be attributed (docs/microsoft-api.md#msclkid)
PENDING_SAMPLE = 500        # check 6 explains the latest this many pending_identity rows
RECENT = timedelta(days=7)
WINDOW_LOOKBACK = timedelta(days=30)  # check 4 compares goal windows with this much click-to-conversion history
# Check 5: the snippet should see about as many msclkid landings as Microsoft counts clicks.
MIN_CLICKS_FOR_CAPTURE = 20
MIN_CAPTURE_SHARE = 0.5
# Check 7: the flush runs every ADSYNC_FLUSH_MINUTES; this many intervals without one means the worker is down.
FLUSH_MISSED_RUNS = 5
INSIGHTS_STALE = health.STALE_AFTER
CONNECTION_LEVEL_KINDS = {Kind.ACCOUNT, Kind.NO_ACCESS, Kind.RECONNECT, Kind.AUTH}


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    since = "just now" if now - moment < timedelta(minutes=1) else f"{timesince(moment, now, depth=1)} ago"
    return f"{moment:%Y-%m-%d %H:%M} UTC ({since})"


def share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "—"


# --- 1. Tokens --------------------------------------------------------------------------------------

def check_tokens(ctx: Context) -> CheckResult:
    """The refresh works now, and the signed-in Microsoft user's role on the account allows uploads."""
    conn = ctx.connection
    reconnect = connection_page_url(conn.pk, "reconnect")
    if conn.status == Connection.DISCONNECTED or not conn.refresh_token:
        return result("tokens", FAIL, "Not connected: adsync holds no token for this account.",
                      remedy="Click Connect on the card and sign in with a user that has Standard access or more.",
                      link=card_url(conn.pk), link_label="the card")
    if conn.status == Connection.TOKEN_EXPIRED:
        return result("tokens", FAIL, "Token expired: Microsoft no longer accepts this connection's refresh token.",
                      [f"Microsoft said: {conn.last_error}"] if conn.last_error else [],
                      remedy="Click Reconnect and sign in with a user that has Standard access or more.",
                      link=reconnect, link_label="Reconnect")
    try:
        ctx.access_token = tokens.refresh(conn, stale_access_token=conn.access_token)
    except MicrosoftAdsError as err:
        return _refresh_failed(conn, err, reconnect)
    conn.refresh_from_db(fields=["token_expires_at", "refreshed_at", "status"])
    evidence = [f"Refresh token accepted now; the new access token is valid until {conn.token_expires_at:%H:%M} UTC "
                f"and the rotated refresh token is stored (encrypted)."]
    try:
        accounts = CustomerClient(access_token=ctx.access_token).reachable_accounts()
    except MicrosoftAdsError as err:
        evidence.append(f"Customer Management (GetUser, SearchAccounts) answered: {err.describe()}")
        see = " (see check 2)" if err.kind == Kind.AUTH else ""
        return result("tokens", WARN, f"The refresh works, but the user's role could not be read{see}.", evidence,
                      remedy="Run the check again in a few minutes; if it persists, Reconnect.",
                      link=reconnect, link_label="Reconnect")
    account = next((a for a in accounts if a.id == conn.account_id), None)
    if account is None:
        evidence.append(f"The signed-in Microsoft user reaches {len(accounts)} account(s), not Account ID "
                        f"{conn.account_id}.")
        return result("tokens", FAIL, f"The signed-in Microsoft user can no longer reach Account ID {conn.account_id}.",
                      evidence, remedy="Reconnect with a user who has Standard access or more on this account, "
                                       "and pick the same account.", link=reconnect, link_label="Reconnect")
    ctx.account = account
    role = account.role_names or "no role listed"
    evidence.append(f"The signed-in Microsoft user's role on Account ID {account.id} ({account.name}): {role}.")
    if account.viewer_only:
        return result("tokens", FAIL, "The signed-in Microsoft user is a Viewer on this account: uploads fail with 106.",
                      evidence, remedy="Reconnect with a user who has Standard access or more on this account.",
                      link=reconnect, link_label="Reconnect")
    if not account.role_ids:
        return result("tokens", WARN, "The refresh works, but Microsoft listed no role for this account.", evidence,
                      remedy="Make sure the user has Standard access or more on the account, then Reconnect.",
                      link=reconnect, link_label="Reconnect")
    return result("tokens", PASS, f"The refresh works and the signed-in user ({role}) may upload.", evidence)


def _refresh_failed(conn: Connection, err: MicrosoftAdsError, reconnect: str) -> CheckResult:
    evidence = [f"Microsoft said: {err.describe()}"]
    if err.kind == Kind.RECONNECT:
        return result("tokens", FAIL, "Microsoft refused the refresh token just now: the card is Token expired.",
                      evidence, remedy="Click Reconnect and sign in with a user that has Standard access or more.",
                      link=reconnect, link_label="Reconnect")
    if err.error_code in health.APP_REJECTED_CODES:
        return result("tokens", FAIL, "Microsoft rejected the app's client ID or secret during the refresh.", evidence,
                      remedy="Enter the Azure app's current client ID and secret (on the card or in "
                             "MICROSOFT_ADS_CLIENT_ID / _SECRET), then Reconnect.", link=card_url(conn.pk),
                      link_label="the card")
    return result("tokens", WARN, "The token refresh failed just now (Microsoft unreachable or busy).", evidence,
                  remedy="Nothing to do if it passes on the next run; adsync retries refreshes on its own.")


# --- 2. Developer token -----------------------------------------------------------------------------

def check_developer_token(ctx: Context) -> CheckResult:
    """Campaign Management, called with a token Microsoft just issued, accepts adsync's developer token."""
    env = conf.environment
    if env == "production" and conf.developer_token == SANDBOX_DEVELOPER_TOKEN:
        return result("developer_token", FAIL, "MICROSOFT_ADS_DEVELOPER_TOKEN is the sandbox's universal token, "
                      "but adsync talks to production.", remedy="Set MICROSOFT_ADS_DEVELOPER_TOKEN to your production "
                      "developer token (Microsoft Advertising Developer Portal → Account).", link=GUIDE_DEVELOPER_TOKEN,
                      link_label="Get a developer token")
    if not ctx.access_token:
        return result("developer_token", SKIP, "Not checked: it needs the working token of check 1.")
    conn = ctx.connection
    client = CampaignClient(access_token=ctx.access_token, customer_id=conn.customer_id, account_id=conn.account_id)
    try:
        ctx.auto_tagging = client.msclkid_auto_tagging_enabled()
    except MicrosoftAdsError as err:
        ctx.api_error = err
        return _api_refused(conn, err, env)
    ctx.api_ok = True
    host = urlsplit(conf.campaign_api_url).netloc
    evidence = [f"Campaign Management ({host}, {env} environment) accepted the developer token with a fresh "
                f"access token for Account ID {conn.account_id} (GetAccountProperties)."]
    status = ctx.account.status if ctx.account else ""
    if status and status != "Active":
        evidence.append(f"The account's status is {status}.")
        return result("developer_token", WARN, f"The developer token is accepted, but the account is {status}.",
                      evidence, remedy="Reactivate the account in Microsoft Ads (Accounts summary); a paused or "
                      "suspended account may refuse uploads.", link=HELP_OFFLINE_GOALS,
                      link_label="Offline conversions help")
    return result("developer_token", PASS, f"Accepted by the {env} environment for this account.", evidence)


def _api_refused(conn: Connection, err: MicrosoftAdsError, env: str) -> CheckResult:
    evidence = [f"GetAccountProperties answered: {err.describe()}"]
    if err.kind == Kind.AUTH:
        # The access token is minutes old, so a 105 here is the developer token (docs/microsoft-api.md#error-codes).
        return result("developer_token", FAIL, f"Microsoft refused the credentials with a fresh access token: the "
                      f"developer token is not accepted by the {env} environment.", evidence,
                      remedy="Set MICROSOFT_ADS_DEVELOPER_TOKEN to an approved developer token of this environment "
                             "(production token for production, BBD37VB98 for sandbox).", link=GUIDE_DEVELOPER_TOKEN,
                      link_label="Get a developer token")
    if err.kind in (Kind.NO_ACCESS, Kind.ACCOUNT, Kind.RECONNECT):
        return result("developer_token", FAIL, "Campaign Management refused this account.", evidence,
                      remedy=err.hint, link=connection_page_url(conn.pk, "reconnect"), link_label="Reconnect")
    return result("developer_token", WARN, "Campaign Management could not be asked just now.", evidence,
                  remedy="Run the check again later; this is usually temporary.")


# --- 3. Auto-tagging --------------------------------------------------------------------------------

def check_auto_tagging(ctx: Context) -> CheckResult:
    """MSCLKIDAutoTaggingEnabled, as check 2's GetAccountProperties returned it."""
    if not ctx.api_ok:
        return result("auto_tagging", SKIP, "Not checked: it needs Campaign Management (check 2).")
    evidence = [f"GetAccountProperties: MSCLKIDAutoTaggingEnabled = {_property(ctx.auto_tagging)}."]
    if ctx.auto_tagging is True:
        return result("auto_tagging", PASS, "On: Microsoft appends msclkid to every landing URL.", evidence)
    remedy = ("Turn on auto-tagging of the Microsoft Click ID in Microsoft Ads (Settings → Account level options → "
              "Auto-tagging), then allow 1–2 weeks for tagged visits to build up.")
    if ctx.auto_tagging is False:
        return result("auto_tagging", FAIL, "Off: landing URLs carry no msclkid, so new visits cannot be matched.",
                      evidence, remedy=remedy, link=HELP_AUTO_TAGGING, link_label="Microsoft: auto-tagging")
    return result("auto_tagging", WARN, "Microsoft's answer did not say whether auto-tagging is on.", evidence,
                  remedy=remedy, link=HELP_AUTO_TAGGING, link_label="Microsoft: auto-tagging")


def _property(value: bool | None) -> str:
    return {True: "true", False: "false"}.get(value, "not returned")


# --- 4. Goal Names ----------------------------------------------------------------------------------

class _Findings:
    """Problems found while checking mappings: the first of the worst kind gives the check its one remedy."""

    def __init__(self):
        self.items: list[tuple[str, str, str, str]] = []  # (outcome, remedy, link, link label)

    def add(self, outcome: str, remedy: str, link: str, label: str) -> None:
        self.items.append((outcome, remedy, link, label))

    def verdict(self) -> tuple[str, str, str, str]:
        for outcome in (FAIL, WARN):
            found = next((item for item in self.items if item[0] == outcome), None)
            if found:
                return found
        return PASS, "", "", ""


def check_goal_names(ctx: Context) -> CheckResult:
    """Every mapped Goal Name: exists exactly, is an active offline goal, its window and enhanced conversions."""
    conn = ctx.connection
    mappings = list(conn.goal_mappings.order_by("event_name"))
    if not mappings:
        return result("goal_names", FAIL, "No event is mapped to a Goal Name, so nothing is sent.",
                      remedy="Map each event (purchase, lead…) to its Goal Name on the card.", link=card_url(conn.pk),
                      link_label="the card")
    evidence = []
    if ctx.api_ok:
        try:
            fetched = [goal for goal in goals.refresh_goals(conn) if goal.missing_since is None]
            evidence.append(f"Goal list fetched from Microsoft now ({len(fetched)} goal(s)).")
        except MicrosoftAdsError as err:
            ctx.goals_error = err
            health.record_failure(conn, Connection.GOAL_REFRESH, err)
            evidence.append(f"The goal list could not be fetched now: {err.describe()}")
    book = GoalBook(conn)
    if not book.known:
        return result("goal_names", SKIP, "Not checked: the account's goal list has never been fetched.", evidence)
    if not evidence or ctx.goals_error:
        evidence.append(f"Checked against the goal list cached {ago(conn.goals_refreshed_at, ctx.now)}.")
    findings, missing = _Findings(), []
    hashed_only = _hashed_only_pending(conn, ctx.now)
    others = _other_goals(ctx, book, mappings, evidence)
    for mapping in mappings:
        evidence.append(_check_mapping(ctx, book, mapping, findings, missing, hashed_only, others))
    outcome, remedy, link, label = findings.verdict()
    summaries = {PASS: f"All {len(mappings)} mapped Goal Name(s) exist as active offline goals.",
                 WARN: "The Goal Names exist, with something to look at.",
                 FAIL: "A mapped Goal Name cannot receive conversions."}
    return result("goal_names", outcome, summaries[outcome], evidence, remedy=remedy, link=link, link_label=label,
                  data={"missing_goals": missing})


def _other_goals(ctx: Context, book: GoalBook, mappings, evidence: list[str]) -> dict[str, str]:
    """{name: type} of the account's goals of every type, fetched only when a mapped name has no offline goal:
    the goal cache holds offline goals only, and a Url goal of that name is not "missing"."""
    unmatched = [m for m in mappings if book.check(m.goal_name).goal is None]
    if not unmatched or not ctx.api_ok:
        return {}
    conn = ctx.connection
    client = CampaignClient(access_token=ctx.access_token, customer_id=conn.customer_id, account_id=conn.account_id)
    try:
        return {str(g.get("Name") or ""): str(g.get("Type") or "") for g in client.get_conversion_goals()}
    except MicrosoftAdsError as err:
        evidence.append(f"The account's goals of other types could not be listed: {err.describe()}")
        return {}


def _near_miss(name: str, names) -> str:
    folded = name.strip().casefold()
    return next((other for other in sorted(names) if other.strip().casefold() == folded and other != name), "")


def _check_mapping(ctx: Context, book: GoalBook, mapping, findings: _Findings, missing: list[str],
                   hashed_only: int, others: dict[str, str]) -> str:
    """One evidence line for one mapping; its problems go to `findings`."""
    conn = ctx.connection
    head = f"{mapping.event_name} → “{mapping.goal_name}”"
    check = book.check(mapping.goal_name)
    goal = check.goal
    if goal is None:
        other_type = others.get(mapping.goal_name)
        if other_type:
            findings.add(FAIL, f"Map an offline conversion goal instead of the {other_type} goal "
                               f"“{mapping.goal_name}”.", HELP_OFFLINE_GOALS, "Microsoft: offline conversions")
            return f"✖ {head}: a {other_type} goal, not an offline conversion goal."
        meant = check.did_you_mean or _near_miss(mapping.goal_name, others)
        if meant:
            findings.add(FAIL, f"Change the mapping of “{mapping.event_name}” to the exact Goal Name “{meant}” "
                               f"(copy-paste it).", card_url(conn.pk), "the card")
            return f"✖ {head}: no goal of that exact name; did you mean “{meant}”?"
        missing.append(mapping.goal_name)
        findings.add(FAIL, f"Create the offline conversion goal “{mapping.goal_name}” in Microsoft Ads (one click: "
                           f"“Create the goal”), or map the name of an existing goal.",
                     connection_page_url(conn.pk, "create-goal") + "?" + urlencode({"name": mapping.goal_name}),
                     "Create the goal")
        choices = ", ".join(f"“{name}”" for name in check.choices) or "none"
        return f"✖ {head}: no such goal in the account (offline goals there: {choices})."
    if not goal.is_offline:
        findings.add(FAIL, f"Map an offline conversion goal instead of the {goal.goal_type} goal “{goal.name}”.",
                     HELP_OFFLINE_GOALS, "Microsoft: offline conversions")
        return f"✖ {head}: a {goal.goal_type} goal, not an offline conversion goal."
    if goal.status != "Active":
        findings.add(FAIL, f"Set the goal “{goal.name}” to Active in Microsoft Ads (Conversions → Conversion goals).",
                     HELP_OFFLINE_GOALS, "Microsoft: offline conversions")
        return f"✖ {head}: the goal is {goal.status}."
    parts = ["offline goal, Active"]
    outcome = PASS
    window = goal.conversion_window_minutes
    if window:
        parts.append(f"{_days(window)} conversion window")
        late, total = _late_conversions(conn, mapping.goal_name, window, ctx.now)
        if late:
            outcome = WARN
            parts.append(f"{late} of {total} conversions of the last 30 days came later after their click than that")
            findings.add(WARN, f"Lengthen the conversion window of “{goal.name}” in Microsoft Ads (up to 90 days): "
                               f"conversions later than the window are rejected (5617).", HELP_OFFLINE_GOALS,
                         "Microsoft: offline conversions")
    if goal.enhanced_conversions:
        parts.append("enhanced conversions on")
    elif conn.enhanced_conversions:
        outcome = FAIL
        parts.append("enhanced conversions OFF although this card sends conversions with email/phone and no msclkid")
        findings.add(FAIL, f"Turn on enhanced conversions for “{goal.name}” in Microsoft Ads, or Microsoft rejects "
                           f"conversions without msclkid (5603).", HELP_ENHANCED, "Microsoft: enhanced conversions")
    elif hashed_only:
        outcome = WARN
        parts.append(f"enhanced conversions off, and {hashed_only} recent pending conversion(s) have an email or "
                     f"phone but no msclkid")
        findings.add(WARN, f"Turn on enhanced conversions for “{goal.name}” in Microsoft Ads and on this card, so "
                           f"conversions with an email or phone but no msclkid are sent.", HELP_ENHANCED,
                     "Microsoft: enhanced conversions")
    settles = book.settles_at(goal)
    if settles:
        outcome = WARN if outcome == PASS else outcome
        parts.append(f"first seen under 2 hours ago: rows wait until {settles:%H:%M} UTC (Microsoft's rule 5615)")
        findings.add(WARN, "Nothing to do: adsync holds this goal's rows until it is 2 hours old.", "", "")
    mark = {PASS: "✔", WARN: "⚠", FAIL: "✖"}[outcome]
    return f"{mark} {head}: " + "; ".join(parts) + "."


def _days(minutes: int) -> str:
    return f"{minutes // 1440}-day" if minutes % 1440 == 0 else f"{minutes}-minute"


def _late_conversions(conn: Connection, goal_name: str, window: int, now: datetime) -> tuple[int, int]:
    """(rows converting later after their click than the goal's window, rows with a known click), last 30 days."""
    counts = Push.objects.filter(connection=conn, goal_name=goal_name, created_at__gte=now - WINDOW_LOOKBACK,
                                 click_time__isnull=False).aggregate(
        total=Count("id"), late=Count("id", filter=Q(conversion_time__gt=F("click_time") + timedelta(minutes=window))))
    return counts["late"], counts["total"]


def _hashed_only_pending(conn: Connection, now: datetime) -> int:
    """Recent pending_identity rows that have an email or phone: enhanced conversions would send them."""
    return (Push.objects.filter(connection=conn, status=Push.PENDING_IDENTITY, created_at__gte=now - WINDOW_LOOKBACK)
            .filter(~Q(hashed_email="") | ~Q(hashed_phone="")).count())


# --- 5. The snippet ---------------------------------------------------------------------------------

def check_snippet(ctx: Context) -> CheckResult:
    """Landings with msclkid per origin, last 24 h and 7 days; conversions without any click are flagged."""
    conn, now = ctx.connection, ctx.now
    site = conn.site
    origins = site.origin_list()
    counts = _landings_by_origin(site, origins, now)
    evidence = [f"{origin}: {counts[f'o{i}_24h']} landing(s) with msclkid in the last 24 h, {counts[f'o{i}_7d']} in "
                f"7 days" for i, origin in enumerate(origins)]
    unlisted = counts["all_7d"] - sum(counts[f"o{i}_7d"] for i in range(len(origins)))
    if unlisted:
        evidence.append(f"Another or unknown origin: {unlisted} landing(s) in 7 days.")
    conversions = (Conversion.objects.filter(site=site, occurred_at__gte=now - RECENT)
                   .exclude(source=Conversion.SOURCE_ADMIN).count())
    evidence.append(f"Conversions reported in 7 days: {conversions}; landings with msclkid: {counts['all_7d']}.")
    fix_snippet = ("Add the adsync snippet to every page that receives Microsoft Ads traffic (the site's page shows "
                   "the tag); it captures msclkid on the first page view.")
    if counts["all_7d"] == 0 and conversions:
        return result("snippet", FAIL, "The site reports conversions but the snippet saw no Microsoft Ads landing in "
                      "7 days: the snippet is missing on landing pages.", evidence, remedy=fix_snippet,
                      link=site_url(site.pk), link_label="the site's snippet tag")
    if counts["all_7d"] == 0:
        return result("snippet", WARN, "No Microsoft Ads landing seen in 7 days (no ad traffic, or no snippet).",
                      evidence, remedy=fix_snippet, link=site_url(site.pk), link_label="the site's snippet tag")
    microsoft_clicks, captured = _capture(conn, now)
    if microsoft_clicks is not None:
        evidence.append(f"Microsoft counted {microsoft_clicks} ad click(s) over the 7 days before today; the snippet "
                        f"saw {captured} landing(s) ({share(captured, microsoft_clicks)}).")
        if microsoft_clicks >= MIN_CLICKS_FOR_CAPTURE and captured < microsoft_clicks * MIN_CAPTURE_SHARE:
            return result("snippet", WARN, f"The snippet saw only {share(captured, microsoft_clicks)} of the clicks "
                          f"Microsoft counted: some landing pages lack it.", evidence, remedy=fix_snippet,
                          link=site_url(site.pk), link_label="the site's snippet tag")
    return result("snippet", PASS, f"{counts['all_24h']} landing(s) with msclkid in 24 h, {counts['all_7d']} in 7 days.",
                  evidence)


def _landings_by_origin(site, origins: list[str], now: datetime) -> dict[str, int]:
    """Click counts per allowed origin and in all, for 24 h and 7 days: one aggregate query."""
    last_day = Q(clicked_at__gte=now - timedelta(hours=24))
    aggregates = {"all_7d": Count("id"), "all_24h": Count("id", filter=last_day)}
    for i, origin in enumerate(origins):
        on_origin = Q(landing_url=origin) | Q(landing_url__startswith=origin + "/") | \
            Q(landing_url__startswith=origin + "?")
        aggregates[f"o{i}_7d"] = Count("id", filter=on_origin)
        aggregates[f"o{i}_24h"] = Count("id", filter=on_origin & last_day)
    return Click.objects.filter(site=site, clicked_at__gte=now - RECENT).aggregate(**aggregates)


def _capture(conn: Connection, now: datetime) -> tuple[int | None, int]:
    """(clicks Microsoft reported, landings the snippet saw) over the 7 whole UTC days before today."""
    end = now.date()
    start = end - timedelta(days=7)
    reported = CampaignInsight.objects.filter(connection=conn, date__gte=start, date__lt=end).aggregate(
        clicks=Sum("clicks"), days=Count("date", distinct=True))
    if not reported["days"]:
        return None, 0
    captured = Click.objects.filter(site_id=conn.site_id, clicked_at__date__gte=start, clicked_at__date__lt=end).count()
    return int(reported["clicks"] or 0), captured


# --- 6. pending_identity ----------------------------------------------------------------------------

NO_CLICK, OLD_CLICK, NO_PII, WITH_PII = "no_click", "old_click", "no_pii", "with_pii"
CAUSES = {
    NO_CLICK: "no click ever seen for the visitor before the conversion",
    OLD_CLICK: "the visitor's click is older than 90 days",
    NO_PII: "no email or phone either (nothing for enhanced conversions)",
    WITH_PII: "an email or phone, but enhanced conversions are off on this card",
}


def check_pending_identity(ctx: Context) -> CheckResult:
    """Of the latest pending_identity rows, why each has no msclkid: the share per cause."""
    conn, now = ctx.connection, ctx.now
    recent = dict(Push.objects.filter(connection=conn, created_at__gte=now - RECENT).values_list("status")
                  .annotate(n=Count("id")).order_by())
    total, pending_recent = sum(recent.values()), recent.get(Push.PENDING_IDENTITY, 0)
    evidence = [f"Last 7 days: {pending_recent} of {total} sync-log row(s) pending_identity "
                f"({share(pending_recent, total)})."]
    rows = list(Push.objects.filter(connection=conn, status=Push.PENDING_IDENTITY).order_by("-created_at")
                .values_list("conversion__visitor_id", "conversion_time", "hashed_email", "hashed_phone")
                [:PENDING_SAMPLE])
    if not rows:
        return result("pending_identity", PASS, "No conversion is waiting for an msclkid.", evidence)
    causes = _pending_causes(conn, rows)
    evidence.append(f"Of the latest {len(rows)} pending_identity row(s):")
    evidence += [f"  {count} ({share(count, len(rows))}): {CAUSES[cause]}" for cause, count in causes.most_common()]
    threshold = conf.digest_pending_share / 100
    high = total >= MIN_PUSHES_FOR_SHARE and pending_recent / total >= threshold if total else False
    remedy, link, label = _pending_remedy(conn, causes)
    if not high:
        return result("pending_identity", PASS, f"{share(pending_recent, total)} of the last 7 days' rows are "
                      f"pending_identity (below {conf.digest_pending_share} %).", evidence, remedy=remedy, link=link,
                      link_label=label)
    main = causes.most_common(1)[0][0]
    return result("pending_identity", WARN, f"{share(pending_recent, total)} of the last 7 days' rows have no msclkid; "
                  f"mostly: {CAUSES[main]}.", evidence, remedy=remedy, link=link, link_label=label)


def _pending_causes(conn: Connection, rows: list[tuple]) -> Counter:
    """Each row counts once for its click cause and, separately, for its email/phone cause."""
    visitors = {visitor for visitor, *_ in rows if visitor}
    clicks: dict[str, list[datetime]] = defaultdict(list)
    for visitor, clicked_at in Click.objects.filter(site_id=conn.site_id, visitor_id__in=visitors).values_list(
            "visitor_id", "clicked_at"):
        clicks[visitor].append(clicked_at)
    causes: Counter = Counter()
    for visitor, conversion_time, hashed_email, hashed_phone in rows:
        before = [c for c in clicks.get(visitor, []) if c <= conversion_time]
        if before and max(before) < conversion_time - MICROSOFT_WINDOW:
            causes[OLD_CLICK] += 1
        elif not before:
            causes[NO_CLICK] += 1
        has_pii = bool(hashed_email or hashed_phone)
        if not has_pii:
            causes[NO_PII] += 1
        elif not conn.enhanced_conversions:
            causes[WITH_PII] += 1
    return causes


def _pending_remedy(conn: Connection, causes: Counter) -> tuple[str, str, str]:
    """The one fix for the largest cause (the seed's "Low match rate" advice)."""
    if causes[WITH_PII] and causes[WITH_PII] >= causes[NO_PII]:
        return ("Turn on enhanced conversions on this card and for the goals in Microsoft Ads: these conversions "
                "have an email or phone.", HELP_ENHANCED, "Microsoft: enhanced conversions")
    if causes[NO_CLICK] >= max(causes[NO_PII], causes[OLD_CLICK], 1):
        return ("Make sure auto-tagging is on (check 3) and the snippet is on every landing page (check 5); visitors "
                "who never clicked a Microsoft ad stay pending by design.", HELP_CLICK_ID, "Microsoft: click ID check")
    if causes[NO_PII]:
        return ("Send the customer's email or phone with each conversion (hashed by adsync) and turn on enhanced "
                "conversions, so conversions without an msclkid can still be matched.", HELP_ENHANCED,
                "Microsoft: enhanced conversions")
    return ("Nothing to fix: conversions more than 90 days after the click cannot be attributed.", HELP_OFFLINE_GOALS,
            "Microsoft: offline conversions")


# --- 7. Flush and insights --------------------------------------------------------------------------

def check_sync_activity(ctx: Context) -> CheckResult:
    """When the last flush and the last insights sync ran, how long ago, and what failed."""
    conn, now = ctx.connection, ctx.now
    conn.refresh_from_db(fields=["last_flush_at", "last_insights_sync_at", "last_error", "last_error_at",
                                 "last_error_operation", "last_error_kind", "last_error_code"])
    flush_every = timedelta(minutes=conf.flush_minutes)
    due = Push.objects.due(now).filter(connection=conn)
    oldest_due = due.order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
    evidence = [f"Last flush: {ago(conn.last_flush_at, now)}; schedule every {conf.flush_minutes} minute(s).",
                f"Rows waiting to be sent now: {due.count()}" + (f", the oldest due since {ago(oldest_due, now)}."
                                                                  if oldest_due else ".")]
    evidence.append(f"Last insights sync: {ago(conn.last_insights_sync_at, now)}.")
    failure = health.last_failure(conn)
    if failure and conn.last_error_at and now - conn.last_error_at <= timedelta(hours=24):
        evidence.append(f"Last failure: {failure}")
    stalled = oldest_due is not None and now - oldest_due > flush_every * FLUSH_MISSED_RUNS
    if stalled and (conn.last_flush_at is None or now - conn.last_flush_at > flush_every * FLUSH_MISSED_RUNS):
        return result("sync_activity", FAIL, "Rows are due but no flush ran for this connection recently: the worker "
                      "(manage.py qcluster) is not running or the schedules are missing.", evidence,
                      remedy="Start the worker (manage.py qcluster) and run manage.py setup_schedules.",
                      link=sync_log_url(connection_id=conn.pk, status=Push.QUEUED), link_label="queued rows")
    if conn.last_error_operation == Connection.UPLOAD and conn.last_error_at and \
            now - conn.last_error_at <= timedelta(hours=24) and (conn.last_flush_at is None
                                                                 or conn.last_flush_at <= conn.last_error_at):
        return result("sync_activity", WARN, "The last upload failed; its rows stay queued and are retried.", evidence,
                      remedy=_hint(conn) or "adsync retries automatically.",
                      link=sync_log_url(connection_id=conn.pk), link_label="the sync log")
    if health.is_stale(conn, now):
        reason = "never ran" if conn.last_insights_sync_at is None else "has not succeeded for 24 hours"
        return result("sync_activity", WARN, f"The insights sync {reason}.", evidence,
                      remedy="Use the action “Resync now”; if it fails again, its reason shows on the card.",
                      link=card_url(conn.pk), link_label="the card")
    return result("sync_activity", PASS, f"Flushed {ago(conn.last_flush_at, now)}; insights synced "
                  f"{ago(conn.last_insights_sync_at, now)}.", evidence)


def _hint(conn: Connection) -> str:
    code = conn.last_error_code
    return remedy_hint(int(code) if code.isdigit() else None, conn.last_error_kind or None)


# --- 8. Errors of the last 24 hours -----------------------------------------------------------------

def check_errors(ctx: Context) -> CheckResult:
    """The error classes of the last 24 hours (the digest's grouping), one verbatim sample each."""
    conn, now = ctx.connection, ctx.now
    classes = error_classes(now - timedelta(hours=24), now, [conn.pk]).get(conn.pk, [])
    link = sync_log_url(connection_id=conn.pk, status=Push.ERROR)
    if not classes:
        return result("errors", PASS, "No sync-log row became an error in the last 24 hours.")
    evidence = []
    for cls in classes:
        sample = cls.samples[0] if cls.samples else None
        said = f" — {cls.source} said: “{sample.message}”" if sample else ""
        tracking = f" (TrackingId {sample.tracking_id})" if sample and sample.tracking_id else ""
        evidence.append(f"{cls.label} ({cls.kind}): {cls.count} row(s){said}{tracking}")
    total = sum(c.count for c in classes)
    top = classes[0]
    outcome = FAIL if any(c.kind in CONNECTION_LEVEL_KINDS for c in classes) else WARN
    return result("errors", outcome, f"{total} row(s) became errors in 24 hours, mostly {top.label}.", evidence,
                  remedy=top.hint, link=link, link_label="errors in the sync log")


# --- 9. Reconciliation ------------------------------------------------------------------------------

def check_reconciliation(ctx: Context) -> CheckResult:
    """Microsoft's per-goal count (the report, fetched now and stored) next to what adsync sent."""
    conn = ctx.connection
    link = connection_page_url(conn.pk, "reconciliation")
    evidence = []
    if ctx.api_ok:
        try:
            reconciliation.fetch(conn, ctx.access_token, sleep=ctx.sleep, now=ctx.now)
        except MicrosoftAdsError as err:
            evidence.append(f"The per-goal report could not be fetched now: {err.describe()}")
    panels = reconciliation.panels(conn, now=ctx.now)
    fetched = max((p.fetched_at for p in panels if p.fetched_at), default=None)
    if fetched is None:
        outcome = SKIP if not ctx.api_ok else WARN
        return result("reconciliation", outcome, "Not compared: Microsoft's per-goal report has not been fetched.",
                      evidence, remedy="Run the check again later.", link=link, link_label="reconciliation")
    evidence.append(f"Microsoft's per-goal report fetched {ago(fetched, ctx.now)}; {reconciliation.LAG_NOTE}")
    evidence += [panel.line() for panel in panels]
    gaps = [panel for panel in panels if panel.has_gap]
    if not gaps and not any(panel.sent_total or panel.reported_total for panel in panels):
        return result("reconciliation", PASS, "Nothing sent or counted yet on the days past the reporting lag.",
                      evidence, link=link, link_label="reconciliation")
    if not gaps:
        return result("reconciliation", PASS, f"Within {conf.reconcile_gap_percent} % for every goal, past the "
                      f"reporting lag.", evidence, link=link, link_label="reconciliation")
    worst = max(gaps, key=lambda p: p.gap_percent)
    if worst.reported_total < worst.sent_total:
        remedy = ("Open the reconciliation panel to find the days that differ, then compare them in Microsoft Ads → "
                  "Conversion goals (a goal counting Unique conversions counts one per click).")
    else:
        remedy = ("Microsoft counts more than adsync sent: another tool or tag also sends to this goal; give adsync a "
                  "goal of its own so each conversion is counted once.")
    return result("reconciliation", WARN, worst.summary(), evidence, remedy=remedy, link=link,
                  link_label="reconciliation")


CHECKS = [check_tokens, check_developer_token, check_auto_tagging, check_goal_names, check_snippet,
          check_pending_identity, check_sync_activity, check_errors, check_reconciliation]
