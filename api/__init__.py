"""Flask web API and page over an index directory: ``create_app(config)`` builds it."""

from api.app import create_app
from api.config import ApiConfig
from api.service import SearchService

__all__ = ["ApiConfig", "SearchService", "create_app"]
