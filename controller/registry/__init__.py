"""What the controller knows of its servers: the node rows (:mod:`.nodes`), heartbeats and down
detection (:mod:`.heartbeats`), logged-on counts (:mod:`.sessions`), the cluster view
(:mod:`.cluster`) and its invariants (:mod:`.invariants`)."""
