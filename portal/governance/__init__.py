"""Governance: retention per role, purges, legal hold, the audit trail's views, records requests and break-glass."""
