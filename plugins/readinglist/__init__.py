"""A FastAPI app laid out as a package, the way FastAPI's "bigger applications" tutorial lays
one out, mounted unchanged by ``plugins/asgi.json`` (``"app": "readinglist.main:app"``).

Its endpoints and dependencies are plain ``def`` functions, which FastAPI runs in a thread on
the server and the browser host runs inline (Pyodide has no threads).
"""
