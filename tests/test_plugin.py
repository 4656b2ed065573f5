"""The plug-in API: ``@vlugin`` on a handler of any name, and ``Context`` with ``ctx.state``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valor import Context, State, vlugin
from valor.errors import PluginLoadError
from valor.kinds.python.core import load_python
from valor.manifest import parse_plugin

pytestmark = pytest.mark.anyio


async def load(tmp_path: Path, source: str, config: dict | None = None):
    (tmp_path / "plugin.py").write_text(source)
    spec = parse_plugin(
        {"name": "p", "type": "python", "path": "plugin.py", "config": config or {}}, tmp_path
    )
    return await load_python(spec)


async def answer(plugin, path: str = "/") -> tuple[int, bytes]:
    message = await plugin.handle(
        {"url": f"http://h{path}", "method": "GET", "headers": [], "body": None}
    )
    return message["status"], message["body"]


async def test_a_handler_of_any_name(tmp_path: Path) -> None:
    plugin = await load(
        tmp_path,
        "from valor import vlugin\n@vlugin\nasync def my_handler(req):\n    return req.path\n",
    )
    assert await answer(plugin, "/x") == (200, b"/x")


async def test_on_create_is_the_creation_hook_and_the_handler_gets_ctx(tmp_path: Path) -> None:
    source = (
        "from valor import vlugin\n"
        "def on_create(ctx):\n    ctx.state.greeting = ctx.config['greeting']\n"
        "@vlugin\ndef handle(ctx, req):\n"
        "    return f'{ctx.state.greeting} from {ctx.name}'\n"
    )
    plugin = await load(tmp_path, source, {"greeting": "hi"})
    assert await answer(plugin) == (200, b"hi from p")
    decorated = source.replace("def on_create", "@vlugin\ndef on_create")  # marking it is fine
    assert await answer(await load(tmp_path, decorated, {"greeting": "yo"})) == (200, b"yo from p")


async def test_two_handlers_are_a_load_error_naming_both(tmp_path: Path) -> None:
    source = (
        "from valor import vlugin\n@vlugin\ndef first(req):\n    return '1'\n"
        "@vlugin\ndef second(req):\n    return '2'\n"
    )
    with pytest.raises(
        PluginLoadError, match="one request handler per module; found first, second"
    ):
        await load(tmp_path, source)
    alias = "from valor import vlugin\n@vlugin\ndef first(req):\n    return '1'\nother = first\n"
    assert await answer(await load(tmp_path, alias)) == (200, b"1")  # one function, two names


async def test_an_undecorated_on_request_is_named(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError, match="on_request must be decorated with @vlugin"):
        await load(tmp_path, "def on_request(req):\n    return 'x'\n")
    with pytest.raises(PluginLoadError, match="neither an @vlugin request handler nor onmessage"):
        await load(tmp_path, "from valor import vlugin\n@vlugin\ndef on_create(ctx):\n    pass\n")


async def test_setting_state_on_ctx_itself_is_a_load_error_naming_ctx_state(
    tmp_path: Path,
) -> None:
    source = (
        "from valor import vlugin\ndef on_create(ctx):\n    ctx.notes = {}\n"
        "@vlugin\ndef on_request(ctx, req):\n    return 'x'\n"
    )
    with pytest.raises(
        PluginLoadError, match=r"cannot set ctx.notes: .*ctx.state.notes = \.\.\.\) at plugin.py:3$"
    ):
        await load(tmp_path, source)


def test_context_keeps_valor_attributes_apart_from_state() -> None:
    ctx = Context("greeter", {"name": "Alice"})
    assert (ctx.name, ctx.config, ctx.log.name) == (
        "greeter",
        {"name": "Alice"},
        "valor.plugin.greeter",
    )
    ctx.state.name = "Alice"  # the plug-in's own "name" never shadows the plug-in's name
    assert ctx.name == "greeter" and ctx.state.name == "Alice"
    assert isinstance(ctx.state, State) and ctx.state == State(name="Alice")
    with pytest.raises(AttributeError, match=r"cannot set ctx.name: .*ctx.state.name = \.\.\."):
        ctx.name = "other"
    with pytest.raises(AttributeError, match=r"ctx\.state"):
        ctx.state = State()
    with pytest.raises(
        AttributeError, match=r"ctx has no attribute 'notes': .*\(ctx.state.notes\)"
    ):
        ctx.notes  # noqa: B018
    with pytest.raises(AttributeError):
        ctx.state.missing  # noqa: B018


def test_vlugin_returns_the_function_unchanged() -> None:
    def my_handler(req):
        return "x"

    assert vlugin(my_handler) is my_handler
    assert my_handler("r") == "x"


def test_the_examples_use_ctx_state() -> None:
    root = Path(__file__).resolve().parent.parent
    manifest = json.loads((root / "plugins" / "plugins.json").read_text())
    assert {p["name"] for p in manifest["plugins"]} >= {"greeter", "notes"}
    for name in ("greeter", "notes"):
        source = (root / "plugins" / f"{name}.py").read_text()
        assert "ctx.state." in source


@pytest.mark.timeout(10)
def test_a_context_without_a_store_says_why() -> None:
    ctx = Context("p", {})
    with pytest.raises(AttributeError, match=r"plug-in 'p' has no store here: .*isolation"):
        ctx.store  # noqa: B018
