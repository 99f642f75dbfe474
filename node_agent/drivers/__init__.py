"""Host drivers: the one interface (:mod:`.base`) and its two implementations, ``windows`` (the
real commands on a Sage CRM web server) and ``sandbox`` (a Sage CRM server played on this machine).
"""
