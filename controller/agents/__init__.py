"""The controller's side of the agent protocol: the HTTP client (:mod:`.client`) and the one way to
follow an operation to its end (:mod:`.follow`)."""
