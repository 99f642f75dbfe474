"""The controller: REST API, cluster registry, upgrade orchestration and dashboard."""
