"""The troubleshooting checklist, in the order an expert works through it: one function per check.

Each check returns a CheckResult: pass / warn / fail (or "not checked" when an earlier check took
away what it needs), the evidence it saw, and ONE remedy with the link to the page that fixes it
(a Microsoft help page or adsync's own admin page). Checks 1-4 and 9 ask Microsoft; 5-8 read
adsync's own rows. A MicrosoftAdsError is a finding, never a crash: it lands in the evidence verbatim.

1-3 account.py (tokens and role, developer token, auto-tagging), 4 goal_names.py, 5-6 traffic.py
(snippet, pending_identity), 7-8 activity.py (flush and insights, errors), 9 reconciliation.py.
"""

from adsync.diagnosis.account import check_auto_tagging, check_developer_token, check_tokens
from adsync.diagnosis.activity import check_errors, check_sync_activity
from adsync.diagnosis.goal_names import check_goal_names
from adsync.diagnosis.reconciliation import check_reconciliation
from adsync.diagnosis.traffic import check_pending_identity, check_snippet

CHECKS = [check_tokens, check_developer_token, check_auto_tagging, check_goal_names, check_snippet,
          check_pending_identity, check_sync_activity, check_errors, check_reconciliation]
