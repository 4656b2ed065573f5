"""A configured plug-in: the manifest's ``config.name`` greets whoever ``?who=`` names."""

from valor import HTTPError, vlugin


def on_create(ctx):
    ctx.state.greeter = ctx.config.get("name", "Valor")


@vlugin
def greet(ctx, req):
    who = req.query_params.get("who")
    if not who:
        raise HTTPError(400, "missing query parameter 'who', as in /greeter?who=Bob")
    return f"{ctx.state.greeter} says hello {who}!"
