"""Calls out, the same in both hosts: asks its sibling ``greeter`` for a greeting (answered
inside the runtime, without the network) and an outside service for the news (``config.news``,
a URL the manifest's ``outbound.allow`` lets it reach)."""

import httpx

from valor import HTTPError, vlugin


def on_create(ctx):
    ctx.state.news = ctx.config["news"]


@vlugin
async def digest(ctx, req):
    who = req.query_params.get("who", "you")
    greeting = await ctx.http.get("/greeter", params={"who": who})
    try:
        news = await ctx.http.get(ctx.state.news, timeout=5)
        news.raise_for_status()
    except httpx.HTTPError as exc:
        raise HTTPError(502, f"the news service failed: {exc}") from None
    return {"greeting": greeting.text, "news": news.json()}
