"""``valor new``: scaffold a plug-in, its manifest entry and a test that passes.

    valor new weather                      # plugins/weather.py, decorated with @vlugin
    valor new weather --kind worker        # a worker-style Python module (onmessage/postMessage)
    valor new weather --kind js            # plugins/weather.js, a Web Worker script
    valor new weather --kind wasm          # plugins/src/weather.wasm.c, built to plugins/build/
    valor new weather --kind rust          # plugins/src/weather/, a Rust crate (wasm and native)

Nothing is written when the name, its prefix or a file it needs is already taken.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .manifest import Manifest, load_manifest, parse_plugin

DEFAULT_MANIFEST = "plugins/plugins.json"


@dataclass(frozen=True)
class Template:
    """How one kind of plug-in is scaffolded (``valor new --kind``)."""

    type: str  # a kind of the registry, ``valor.kinds.KINDS``
    file: str  # where the source goes, relative to the manifest's folder; {name} is replaced
    path: str  # the manifest entry's "path"
    template: str
    compiled: bool = False
    extra: tuple[tuple[str, str], ...] = ()  # more (file, template) pairs, e.g. a Cargo.toml
    crate: bool = False  # a Rust crate: built from the folder holding it
    greets_who: bool = True  # the C templates stay minimal: no query parsing in C


class ScaffoldError(Exception):
    """A scaffold that would clash with what exists; nothing has been written."""


@dataclass(frozen=True)
class Scaffold:
    manifest: Path
    entry: dict[str, Any]
    files: dict[Path, str]
    kind: Template


PYTHON = '''\
"""{name}: a Valor plug-in. ``GET {prefix}?who=Ann`` answers a greeting."""

from valor import vlugin


@vlugin
def on_request(req):
    who = req.query_params.get("who", "world")
    return f"Hello {{who}}, from {name}!"
'''

WORKER = '''\
"""{name}: a worker-style Valor plug-in. Like a Web Worker, it receives the request as
``event.data`` ({{url, method, headers, body}}) and answers with ``postMessage``."""

from urllib.parse import parse_qs, urlsplit


def onmessage(event):
    request = event.data
    who = parse_qs(urlsplit(request["url"]).query).get("who", ["world"])[0]
    postMessage(  # noqa: F821 - provided by the runtime, as in a Web Worker
        {{
            "status": 200,
            "headers": [["content-type", "text/plain; charset=utf-8"]],
            "body": f"Hello {{who}}, from {name}!",
        }}
    )
'''

JS = """\
// {name}: a JavaScript plug-in (type "js"), a Web Worker script; the same file runs in both hosts.
// It receives {{url, method, headers: [[name, value], ...], body}} and answers with postMessage.
self.onmessage = (event) => {{
  const who = new URL(event.data.url).searchParams.get("who") ?? "world";
  postMessage({{
    status: 200,
    headers: {{ "content-type": "text/plain; charset=utf-8" }},
    body: `Hello ${{who}}, from {name}!`,
  }});
}};
"""

WASM = """\
/* {name}: a WebAssembly plug-in (type "wasm"). Build it with
 *     python -m valor.toolchain {src_dir}
 * in the manifest's folder; it writes {path}. ABI: docs/kinds.md. */
#include "valor_abi.h"

static uint8_t *answer;

__attribute__((export_name("alloc"))) uint8_t *alloc(uint32_t len) {{
  free(answer);
  answer = NULL;
  return malloc(len ? len : 1);
}}

__attribute__((export_name("handle"))) uint64_t handle(uint8_t *ptr, uint32_t len) {{
  static const char greeting[] = "Hello world, from {name}!";
  size_t out_len = 0;
  answer = valor_response(200, "text/plain; charset=utf-8", greeting, sizeof greeting - 1,
                          &out_len);
  free(ptr);
  return answer ? (uint64_t)(uintptr_t)answer << 32 | out_len : 0;
}}
"""

WASI = """\
/* {name}: a WASI plug-in (type "wasi"), CGI style. Build it with
 *     python -m valor.toolchain {src_dir}
 * in the manifest's folder; it writes {path}. The request is in the environment
 * (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_*) and the body on stdin; print headers, a
 * blank line, then the body. */
#include <stdio.h>

int main(void) {{
  printf("Status: 200\\nContent-Type: text/plain; charset=utf-8\\n\\nHello world, from {name}!");
  return 0;
}}
"""

NATIVE = """\
/* {name}: a native plug-in (type "native"), server host only. Build it with
 *     python -m valor.toolchain {src_dir}
 * in the manifest's folder; it writes {path}. ABI: docs/kinds.md. */
#include "valor_abi.h"

int valor_handle(const uint8_t *ptr, size_t len, uint8_t **resp, size_t *resp_len) {{
  static const char greeting[] = "Hello world, from {name}!";
  (void)ptr;
  (void)len;
  *resp = valor_response(200, "text/plain; charset=utf-8", greeting, sizeof greeting - 1,
                         resp_len);
  return *resp ? 0 : 1;
}}

void valor_free(uint8_t *resp) {{ free(resp); }}
"""

RUST = """\
//! {name}: a Valor plug-in in Rust. Build it with
//!     python -m valor.toolchain {src_dir}
//! in the manifest's folder: it writes {path} (the wasm kind, for both hosts) and the same
//! crate as a native library, {native}. The SDK: sdk/rust/ in Valor; docs/kinds.md.
use valor::*;

#[vlugin]
fn on_request(req: Request) -> Response {{
    let who = req.query_param("who").unwrap_or_else(|| "world".to_string());
    format!("Hello {{}}, from {name}!", who).into()
}}
"""

CARGO_TOML = """\
[package]
name = "{package}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
valor = {{ path = {sdk} }}

[profile.release]
opt-level = "s"
strip = true
"""

TEMPLATES: dict[str, Template] = {
    "python": Template("python", "{name}.py", "{name}.py", PYTHON),
    "worker": Template("python", "{name}.py", "{name}.py", WORKER),
    "js": Template("js", "{name}.js", "{name}.js", JS),
    "wasm": Template(
        "wasm", "src/{name}.wasm.c", "build/{name}.wasm", WASM, compiled=True, greets_who=False
    ),
    "wasi": Template(
        "wasi", "src/{name}.wasi.c", "build/{name}.wasi.wasm", WASI, compiled=True, greets_who=False
    ),
    "native": Template(
        "native", "src/{name}.native.c", "build/{name}.so", NATIVE, compiled=True, greets_who=False
    ),
    "rust": Template(
        "wasm",
        "src/{name}/src/lib.rs",
        "build/{name}.wasm",
        RUST,
        compiled=True,
        extra=(("src/{name}/Cargo.toml", CARGO_TOML),),
        crate=True,
    ),
}

TEST = '''\
"""Tests for the {name} plug-in, run in-process by valor.testing.TestClient."""

from pathlib import Path

from valor.testing import TestClient{imports}

MANIFEST = Path(__file__).parent / {manifest}
{setup}

def test_{ident}_answers() -> None:
    with TestClient(MANIFEST) as client:
        response = client.get("{prefix}")
    assert response.status_code == 200
    assert response.headers["x-valor-plugin"] == "{name}"
    assert response.text == "Hello world, from {name}!"
'''

TEST_WHO = """

def test_{ident}_greets_who() -> None:
    with TestClient(MANIFEST) as client:
        response = client.get("{prefix}", params={{"who": "Ann"}})
    assert response.text == "Hello Ann, from {name}!"
"""

# Compiled kinds build before the test runs, so the test checks the source as it is now.
TEST_BUILD = """SOURCES = Path(__file__).parent / {src_dir}


def setup_module() -> None:
    build(SOURCES)
"""


def plan(
    name: str,
    kind_name: str = "python",
    manifest_path: str | Path = DEFAULT_MANIFEST,
    prefix: str | None = None,
    tests_dir: str | Path = "tests",
) -> Scaffold:
    """Work out every file to write, checking that nothing clashes. Writes nothing."""
    kind = TEMPLATES[kind_name]
    manifest_path = Path(manifest_path)
    base_dir = manifest_path.resolve().parent
    existing = _existing(manifest_path, base_dir)

    entry: dict[str, Any] = {"name": name, "type": kind.type, "path": kind.path.format(name=name)}
    if prefix is not None:
        entry["prefix"] = prefix
    try:
        spec = parse_plugin(entry, base_dir, where="the new plug-in")
    except ManifestError as exc:
        raise ScaffoldError(str(exc)) from None
    for other in existing.plugins:
        if other.name == name:
            raise ScaffoldError(f"a plug-in named {name!r} is already in {manifest_path}")
        if other.prefix == spec.prefix:
            raise ScaffoldError(
                f"prefix {spec.prefix!r} is already used by plug-in {other.name!r} in "
                f"{manifest_path}; choose another with --prefix"
            )

    source = base_dir / kind.file.format(name=name)
    fields = {
        "name": name,
        "prefix": spec.prefix,
        "path": entry["path"],
        "src_dir": _relative(sources_dir(kind, source), base_dir),
    }
    if kind.crate:
        fields.update(_crate_fields(name, entry["path"], source.parents[1]))
    files = {source: kind.template.format(**fields)}
    for extra, template in kind.extra:
        files[base_dir / extra.format(name=name)] = template.format(**fields)
    if kind.compiled and not kind.crate and not (source.parent / "valor_abi.h").exists():
        files[source.parent / "valor_abi.h"] = abi_header()  # the sources include it
    tests = Path(tests_dir).resolve()
    test = _test(name, kind, spec.prefix, manifest_path.resolve(), tests)
    files[tests / f"test_{_identifier(name)}.py"] = test
    for path in files:
        if path.exists():
            raise ScaffoldError(f"{path} already exists; not overwriting it")
    return Scaffold(manifest_path, entry, files, kind)


def sources_dir(kind: Template, source: Path) -> Path:
    """The folder ``valor.toolchain`` builds: the source's own, or the one holding the crate."""
    return source.parents[2] if kind.crate else source.parent


def _crate_fields(name: str, path: str, crate: Path) -> dict[str, str]:
    """The crate's template fields; the SDK's path relative to the crate, as the examples'
    Cargo.toml give it: the project keeps building wherever it and Valor's checkout move
    together (an absolute path holds only on the machine that wrote it)."""
    from .toolchain import RUST_SDK

    if not (RUST_SDK / "Cargo.toml").is_file():
        raise ScaffoldError(
            f"the Rust SDK is not at {RUST_SDK} (it is sdk/rust/valor in a checkout of Valor); "
            "set VALOR_RUST_SDK to its folder"
        )
    package = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    return {
        "package": package if package[0].isalpha() else f"plugin-{package}",
        "sdk": json.dumps(Path(os.path.relpath(RUST_SDK.resolve(), crate.resolve())).as_posix()),
        "native": path.removesuffix(".wasm") + ".so",
    }


def write(scaffold: Scaffold) -> None:
    """Write the files, then add the entry to the manifest (created if absent)."""
    for path, text in scaffold.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    manifest = scaffold.manifest
    if manifest.exists():
        text = _appended(manifest.read_text("utf-8"), scaffold.entry)
    else:
        text = json.dumps({"plugins": [scaffold.entry]}, indent=2) + "\n"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(text, encoding="utf-8")


def _appended(text: str, entry: dict[str, Any]) -> str:
    """The manifest's text with ``entry`` added as the last plug-in, keeping the rest of the
    file as its author laid it out; reformatted only when its layout is unusual."""
    data = json.loads(text)
    data["plugins"].append(entry)
    end = re.search(r"\]\s*\}\s*$", text)
    if end is not None:
        before = text[: end.start()].rstrip()
        gap = text[len(before) : end.start()]  # between the last entry and "]"
        separator = "," if before.endswith("}") else ""
        if "\n" in gap:  # one entry per line (or more): a new line, indented like the last
            last_line = before[before.rfind("\n") + 1 :]
            indent = re.match(r"[ \t]*", last_line).group(0) if separator else gap[1:] + "  "
            added = f"{separator}\n{indent}{json.dumps(entry)}"
        else:
            added = f"{separator}{' ' if separator else ''}{json.dumps(entry)}"
        candidate = before + added + text[len(before) :]
        try:
            if json.loads(candidate) == data:
                return candidate
        except json.JSONDecodeError:
            pass
    return json.dumps(data, indent=2) + "\n"


def abi_header() -> str:
    """The C header compiled plug-ins include (``valor_abi.h``), as the package ships it."""
    return (Path(__file__).resolve().parent / "static" / "valor_abi.h").read_text("utf-8")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        scaffold = plan(args.name, args.kind, args.manifest, args.prefix, args.tests)
    except ScaffoldError as exc:
        print(f"valor new: {exc}", file=sys.stderr)
        return 2
    write(scaffold)
    cwd = Path.cwd()
    for path in scaffold.files:
        print(f"created {_shown(path, cwd)}")
    print(f"added {scaffold.entry['name']!r} to {scaffold.manifest}")
    built = scaffold.kind.compiled and _build(scaffold, cwd)
    print(_next_steps(scaffold, cwd, built))
    return 0


def _build(scaffold: Scaffold, cwd: Path) -> bool:
    """Compile a new C plug-in now if the toolchain is here; else say what is missing."""
    from .toolchain import ToolchainError, build

    source = next(iter(scaffold.files))
    try:
        outputs = build(sources_dir(scaffold.kind, source))
    except ToolchainError as exc:
        print(f"not built yet: {exc}")
        return False
    target = scaffold.manifest.resolve().parent / scaffold.entry["path"]
    if target in outputs:
        print(f"built {_shown(target, cwd)}")
    return True


def _existing(manifest_path: Path, base_dir: Path) -> Manifest:
    if not manifest_path.exists():
        return Manifest(plugins=[], base_dir=base_dir)
    try:
        return load_manifest(manifest_path)
    except ManifestError as exc:
        raise ScaffoldError(f"{exc}; fix the manifest first") from None


def _test(name: str, kind: Template, prefix: str, manifest: Path, tests: Path) -> str:
    source_dir = sources_dir(kind, manifest.parent / kind.file.format(name=name))
    fields = {
        "name": name,
        "ident": _identifier(name),
        "prefix": prefix,
        "manifest": json.dumps(_relative(manifest, tests)),
        "imports": "\nfrom valor.toolchain import build" if kind.compiled else "",
        "setup": TEST_BUILD.format(src_dir=json.dumps(_relative(source_dir, tests)))
        if kind.compiled
        else "",
    }
    text = TEST.format(**fields)
    if kind.greets_who:
        text += TEST_WHO.format(**fields)
    return text


def _next_steps(scaffold: Scaffold, cwd: Path, built: bool) -> str:
    manifest = scaffold.manifest
    prefix = scaffold.entry.get("prefix", "/" + scaffold.entry["name"])
    test = next(p for p in scaffold.files if p.name.startswith("test_"))
    steps = ["", "next:"]
    if scaffold.kind.compiled:
        source = next(iter(scaffold.files))
        when = "after each change" if built else "once the toolchain is installed"
        folder = _shown(sources_dir(scaffold.kind, source), cwd)
        steps.append(f"  python -m valor.toolchain {folder}   # build {when}")
    steps.append(f"  valor call {manifest} GET {prefix}")
    steps.append(f"  python -m pytest {_shown(test, cwd)}")
    return "\n".join(steps)


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _shown(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="valor new", description="Scaffold a plug-in, its manifest entry and a test."
    )
    parser.add_argument("name", metavar="NAME", help="the plug-in's name, e.g. weather")
    parser.add_argument(
        "--kind",
        choices=sorted(TEMPLATES),
        default="python",
        help="python (@vlugin, the default), worker (Python onmessage/postMessage), js, "
        "wasm, wasi or native (C sources), or rust (a crate, to wasm and native); compiled "
        "kinds are built with valor.toolchain",
    )
    parser.add_argument(
        "--manifest",
        default=DEFAULT_MANIFEST,
        help=f"the manifest to add it to, created if absent (default: {DEFAULT_MANIFEST})",
    )
    parser.add_argument("--prefix", help="where to mount it (default: /NAME)")
    parser.add_argument("--tests", default="tests", help="where to write its test (default: tests)")
    return parser
