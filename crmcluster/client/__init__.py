"""The client side of ``crmcluster``: an HTTP client for the controller, tables, the upgrade watcher."""
