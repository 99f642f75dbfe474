"""The node agent: one per Sage CRM web server. Reports status and carries out the controller's
operations through a host driver (``windows`` in production, ``sandbox`` on this machine).

Only :mod:`node_agent.protocol` is public to other packages; :mod:`node_agent.testing` starts
in-process sandbox agents for other packages' tests (see docs/agent.md).
"""
