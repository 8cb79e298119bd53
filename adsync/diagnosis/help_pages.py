"""Microsoft's help pages the checklist's remedies link to (the same text as help.ads.microsoft.com), as cited in
docs/microsoft-api.md."""

HELP_AUTO_TAGGING = "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_proc_microsoftclickid"
HELP_CLICK_ID = "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_conc_microsoftclickidcheck"
HELP_OFFLINE_GOALS = "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_conc_uetv2offlineconversion"
HELP_ENHANCED = "https://learn.microsoft.com/en-us/advertising/msa-help/hlp_ba_conc_uet_enhancedconversions"
GUIDE_DEVELOPER_TOKEN = "https://learn.microsoft.com/en-us/advertising/guides/get-started?view=bingads-13"
