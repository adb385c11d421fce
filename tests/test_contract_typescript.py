"""A TypeScript client generated from the served OpenAPI document compiles against ordinary use:
openapi-typescript turns GET /api/openapi.json into types and `tsc --noEmit` checks
tests/typescript/client.ts (create a workflow with `config: {url}`, execute it with no body,
read the run, tell stream events apart by `event`) against them.

The two npm packages are pinned in tests/typescript/package-lock.json; `make test` installs them
with `npm ci --prefix tests/typescript` where npm exists. Nothing is downloaded here: without
them (or without node) the test skips and says why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import run_command

HERE = Path(__file__).parent / "typescript"
BIN = HERE / "node_modules" / ".bin"


async def test_a_generated_typescript_client_compiles(
    client: TestClient[Any, web.Application], tmp_path: Path
) -> None:
    if shutil.which("node") is None or shutil.which("npx") is None:
        pytest.skip("node and npx are not installed: the TypeScript client is not compiled")
    if not (BIN / "openapi-typescript").exists() or not (BIN / "tsc").exists():
        pytest.skip("openapi-typescript and typescript are not installed: "
                    "run `npm ci --prefix tests/typescript` (make test does)")
    (tmp_path / "openapi.json").write_bytes(await (await client.get("/api/openapi.json")).read())
    await run_command(BIN / "openapi-typescript", "openapi.json", "--output", "flowstage-api.d.ts", cwd=tmp_path)
    (tmp_path / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {
            "strict": True, "noEmit": True, "target": "ES2022", "module": "ES2022",
            "moduleResolution": "Bundler", "lib": ["ES2022", "DOM"], "types": [],
            "paths": {"flowstage-api": ["./flowstage-api.d.ts"]},
        },
        "files": [str(HERE / "client.ts"), "flowstage-api.d.ts"],
    }))
    await run_command(BIN / "tsc", "--project", "tsconfig.json", cwd=tmp_path)
