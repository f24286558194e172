"""Alerting on the collector's stream: rules, state, notifications, silences, history."""
