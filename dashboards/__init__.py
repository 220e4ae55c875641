"""Dashboards: Grafana dashboards, datasource and alert rules built as code."""
