"""A configured plug-in: the manifest's ``config.name`` greets whoever ``?who=`` names."""

from valor import HTTPError, vlugin


@vlugin
def on_create(ctx):
    ctx.name = ctx.config.get("name", "Valor")


@vlugin
def on_request(ctx, req):
    who = req.query_params.get("who")
    if not who:
        raise HTTPError(400, "missing query parameter 'who', as in /greeter?who=Bob")
    return f"{ctx.name} says hello {who}!"
