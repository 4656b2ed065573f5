import json
from pathlib import Path

import pytest

from valor.errors import ManifestError
from valor.manifest import load_manifest, parse_manifest


def test_example_manifest_loads(tmp_path: Path) -> None:
    manifest = load_manifest(Path("plugins/plugins.json"))
    names = [spec.name for spec in manifest.plugins]
    assert names[:4] == ["hello", "greeter", "echo", "notes"]
    greeter = manifest.plugins[1]
    assert greeter.prefix == "/greeter"
    assert greeter.config == {"name": "Alice"}
    assert greeter.path == Path("plugins/greeter.py").resolve()
    assert greeter.timeout == 30.0


def test_prefix_is_normalised() -> None:
    manifest = parse_manifest(
        {"plugins": [{"name": "a", "type": "python", "path": "a.py", "prefix": "/api/v1/"}]},
        Path("/srv"),
    )
    assert manifest.plugins[0].prefix == "/api/v1"
    assert manifest.plugins[0].path == Path("/srv/a.py")


@pytest.mark.parametrize(
    ("data", "message", "plugin", "field"),
    [
        ([], 'must be an object with a "plugins" list', None, None),
        ({"plugins": [1]}, "plugins[0]: a plug-in definition must be an object", None, None),
        ({"plugins": [{"type": "python"}]}, "plugins[0]: 'name'", None, "name"),
        (
            {"plugins": [{"name": "a", "type": "perl", "path": "a"}]},
            "'type' must be one of",
            "a",
            "type",
        ),
        ({"plugins": [{"name": "a", "type": "python"}]}, "'path' is required", "a", "path"),
        (
            {"plugins": [{"name": "a", "type": "proxy", "url": "ftp://x"}]},
            "'url' must be",
            "a",
            "url",
        ),
        (
            {"plugins": [{"name": "a", "type": "python", "path": "a", "prefix": "x"}]},
            "'prefix' must be a path",
            "a",
            "prefix",
        ),
        (
            {"plugins": [{"name": "a", "type": "python", "path": "a", "timeout": 0}]},
            "'timeout' must be a positive number",
            "a",
            "timeout",
        ),
        (
            {"plugins": [{"name": "a", "type": "python", "path": "a", "colour": 1}]},
            "'colour' is not a known field",
            "a",
            "colour",
        ),
        (
            {"plugins": [{"name": "a", "type": "python", "path": "a", "requirements": "x"}]},
            "'requirements' must be a list",
            "a",
            "requirements",
        ),
        (
            {
                "plugins": [
                    {"name": "a", "type": "python", "path": "a"},
                    {"name": "a", "type": "python", "path": "b", "prefix": "/b"},
                ]
            },
            "name is used twice",
            "a",
            "name",
        ),
        (
            {
                "plugins": [
                    {"name": "a", "type": "python", "path": "a"},
                    {"name": "b", "type": "python", "path": "b", "prefix": "/a"},
                ]
            },
            "already used by 'a'",
            "b",
            "prefix",
        ),
    ],
)
def test_errors_name_the_plugin_and_field(data, message, plugin, field) -> None:
    with pytest.raises(
        ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")
    ) as caught:
        parse_manifest(data, Path("/srv"))
    assert caught.value.plugin == plugin
    assert caught.value.field == field


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ManifestError, match="is not valid JSON"):
        load_manifest(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"plugins": []}))
    assert load_manifest(good).base_dir == tmp_path.resolve()


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_timeout_must_be_finite(tmp_path: Path, text: str) -> None:
    # json.loads reads NaN and Infinity; a NaN deadline never passes, an infinite one never ends.
    manifest = tmp_path / "plugins.json"
    entry = '{"name": "a", "type": "python", "path": "a.py", "timeout": ' + text + "}"
    manifest.write_text('{"plugins": [' + entry + "]}")
    with pytest.raises(ManifestError, match="'timeout' must be a positive number") as caught:
        load_manifest(manifest)
    assert caught.value.field == "timeout"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"type": "js", "path": "a.js", "isolation": "process"}, "isolation"),
        ({"type": "python", "path": "a.py", "isolation": "vm"}, "isolation"),
        ({"type": "python", "path": "a.py", "limits": {"threads": 0}}, "limits"),
        ({"type": "python", "path": "a.py", "limits": {"threads": 1.5}}, "limits"),
        ({"type": "python", "path": "a.py", "limits": {"disk": 1}}, "limits"),
        ({"type": "python", "path": "a.py", "limits": []}, "limits"),
    ],
)
def test_isolation_and_limits_are_checked(entry: dict, field: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest({"plugins": [{"name": "a", **entry}]}, Path("/srv"))
    assert caught.value.field == field


def test_isolation_and_limits_are_kept() -> None:
    entry = {"name": "a", "type": "python", "path": "a.py", "isolation": "process"}
    entry["limits"] = {"threads": 4, "memory_mb": 256, "cpu_seconds": 10}
    spec = parse_manifest({"plugins": [entry]}, Path("/srv")).plugins[0]
    assert spec.isolation == "process"
    assert spec.limits == {"threads": 4, "memory_mb": 256, "cpu_seconds": 10}


def test_site_is_a_folder_relative_to_the_manifest(tmp_path: Path) -> None:
    manifest = parse_manifest({"site": "web/", "plugins": []}, tmp_path)
    assert manifest.site == (tmp_path / "web").resolve()
    assert parse_manifest({"plugins": []}, tmp_path).site is None
    for wrong in (3, "", ["web"]):
        with pytest.raises(ManifestError, match='"site" must be a folder') as caught:
            parse_manifest({"site": wrong, "plugins": []}, tmp_path)
        assert caught.value.field == "site"
