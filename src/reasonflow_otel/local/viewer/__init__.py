"""``reasonflow-otel ui``: a local web viewer and JSON API over the local trace store."""
