"""The dashboard at ``/``: routes (:mod:`.routes`), the live feed of sections (:mod:`.feed`) and the
signed-in session (:mod:`.session`), with its Jinja2 ``templates/`` and ``static/`` files."""
