"""Changes to a running cluster, each a chapter of the guide: joining and removing a server
(:mod:`.membership`), drain (:mod:`.drain`), the one Replication Engine
(:mod:`.replication_engine`), the services installed once (:mod:`.services`), the shared library
(:mod:`.library`), metadata refresh (:mod:`.metadata`) and database capacity (:mod:`.capacity`)."""
