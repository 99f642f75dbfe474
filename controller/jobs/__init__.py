"""Multi-step cluster operations as persisted jobs: the rows (:mod:`.store`) and running their
steps in order (:mod:`.runner`)."""
