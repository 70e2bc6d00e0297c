"""The API's own client lives in `hypernetes/apiclient.py`, a leaf module below every room, so that
the scheduler, controllers and node agents (rooms below `api/`) can use it without importing
the server. Re-exported here for tests and tools written against the API."""

from hypernetes.apiclient import ApiClient, ApiException, Expired, WatchEvent, path

__all__ = ["ApiClient", "ApiException", "Expired", "WatchEvent", "path"]
