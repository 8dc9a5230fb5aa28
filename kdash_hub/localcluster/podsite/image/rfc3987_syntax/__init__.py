# Left out of the stand-in notebook image (kdash_hub.localcluster.processes.PODIMAGE):
# jsonschema's optional IRI check, which builds an Earley grammar when imported, about 5 s of
# CPU at every notebook server start (jupyter_server -> jupyter_events -> jsonschema).
# jsonschema imports it in `suppress(ImportError)` and checks no "iri" format without it.
raise ImportError("rfc3987_syntax is not in the local cluster's notebook image")
