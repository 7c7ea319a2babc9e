"""API routers: health (no auth), gallery, query. Footage jobs live in routes/jobs.py."""
