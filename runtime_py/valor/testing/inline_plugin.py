"""A plug-in that runs Python source handed to it in its config: how a handler written inline in
a test (``valor_api.use("todos", handler)``) reaches the browser's runtime.

The front-end fixture ships this file in the bundle it builds for tests, and mounts it through
the runtime's own ``/_plugins`` registry with ``{"source", "handler"}`` as its config, so the
override is kept in the site's store: it holds after a reload, and the next test's empty store
drops it. A site built with ``valor build`` never has it.
"""

import inspect

from valor import vlugin


async def on_create(ctx):
    namespace = {"__name__": f"valor_override_{ctx.name.replace('-', '_').replace('.', '_')}"}
    exec(compile(ctx.config["source"], f"<override {ctx.name}>", "exec"), namespace)
    wanted = ctx.config.get("handler")
    handler = namespace.get(wanted) if wanted else _handler_of(namespace)
    if not callable(handler):
        raise ValueError(f"the override {ctx.name!r} defines no handler {wanted or ''}".strip())
    create = namespace.get("on_create")
    if callable(create) and create is not handler:
        created = create(ctx)
        if inspect.isawaitable(created):
            await created
    ctx.state.valor_handler = handler
    ctx.state.valor_takes_ctx = len(inspect.signature(handler).parameters) >= 2


def _handler_of(namespace):
    """A module's handler, as the python loader finds it: ``@vlugin``'s, else ``on_request``."""
    marked = [v for v in namespace.values() if getattr(v, "__vlugin__", None) == "handler"]
    return marked[0] if marked else namespace.get("on_request")


@vlugin
async def answer(ctx, req):
    handler = ctx.state.valor_handler
    result = handler(ctx, req) if ctx.state.valor_takes_ctx else handler(req)
    if inspect.isawaitable(result):
        result = await result
    return result
