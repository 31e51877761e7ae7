"""Central's REST API (FastAPI): ``/health`` and ``/api/v1/…``; OpenAPI at ``/docs``."""
