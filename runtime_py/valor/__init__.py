"""Valor: a plug-in runtime for HTTP APIs. The same plug-ins run on a server and in the browser."""

from .errors import HTTPError, ManifestError, PluginCrashed, PluginLoadError
from .outbound import http_client
from .plugin import Context, State, vlugin
from .requests import QueryParams, Request
from .responses import Response, StreamingResponse

__version__ = "0.1.0"

__all__ = [
    "Context",
    "HTTPError",
    "ManifestError",
    "PluginCrashed",
    "PluginLoadError",
    "QueryParams",
    "Request",
    "Response",
    "State",
    "StreamingResponse",
    "__version__",
    "http_client",
    "vlugin",
]
