"""The ``crmcluster`` command and the demo: the composition root that wires the other packages."""

__version__ = "0.1.0"
