"""The controller's REST API under ``/api/v1`` (DESIGN.md "Controller contract"), one router per concept."""
