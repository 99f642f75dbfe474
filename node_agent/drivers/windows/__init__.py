"""The windows host driver (see :mod:`.driver`)."""

from node_agent.drivers.windows.driver import WindowsDriver

__all__ = ["WindowsDriver"]
