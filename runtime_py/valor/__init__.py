"""Valor: a plug-in runtime for HTTP APIs. The same plug-ins run on a server and in the browser."""

from .errors import HTTPError
from .plugin import Context, vlugin
from .requests import Request
from .responses import Response, StreamingResponse

__version__ = "0.1.0"

__all__ = [
    "Context",
    "HTTPError",
    "Request",
    "Response",
    "StreamingResponse",
    "__version__",
    "vlugin",
]
