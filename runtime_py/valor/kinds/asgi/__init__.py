"""``type: "asgi"``: an ASGI application (FastAPI, Starlette...) mounted as a plug-in."""
