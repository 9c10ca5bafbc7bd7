"""One router per resource of the northbound API; `mlsysops.continuum.api.app.create_app` includes them."""
