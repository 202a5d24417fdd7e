"""The admin HTTP API: users and roles, the audit trail, channels, messages, queues, RIS and archive views."""
