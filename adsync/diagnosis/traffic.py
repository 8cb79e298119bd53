"""Checks 5-6, the visitors' side: does the snippet see Microsoft Ads landings with msclkid, and why the
conversions waiting as pending_identity have none (the share per cause, and the fix for the largest).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum

from adsync.conf import conf
from adsync.diagnosis.context import Context, result, share
from adsync.diagnosis.help_pages import HELP_CLICK_ID, HELP_ENHANCED, HELP_OFFLINE_GOALS
from adsync.links import site_url
from adsync.models import CampaignInsight, CheckResult, Click, Connection, Conversion, Push
from adsync.models.diagnosis import FAIL, PASS, WARN
from adsync.notify.digest import MIN_PUSHES_FOR_SHARE

MICROSOFT_WINDOW = timedelta(days=90)  # clicks older than this cannot be attributed (docs/microsoft-api.md#msclkid)
PENDING_SAMPLE = 500        # check 6 explains the latest this many pending_identity rows
RECENT = timedelta(days=7)
# Check 5: the snippet should see about as many msclkid landings as Microsoft counts clicks.
MIN_CLICKS_FOR_CAPTURE = 20
MIN_CAPTURE_SHARE = 0.5


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
    recent = dict(Push.objects.counted().filter(connection=conn, created_at__gte=now - RECENT).values_list("status")
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
