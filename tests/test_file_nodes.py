"""csv_parse and json_parse over uploaded files, through HTTP on a stage with manual time:
the node outputs the file's real rows or value, bounded; a malformed or deleted file fails
that node with a message naming it; a node without a file keeps its mock output."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from aiohttp import FormData

from flowstage.simulation.parsing import MAX_PARSED_BYTES, FileTooLarge, MalformedFile, parse_csv, parse_json
from flowstage.testing import RunHandle, Stage

PEOPLE_CSV = (
    "\ufeffid,name,note\r\n"  # a BOM and CRLF, as spreadsheet exports on Windows write them
    '1,Ada,"wrote the first program, 1843"\r\n'
    "\r\n"  # blank lines are skipped
    '2,Grace,"said ""it\'s easier to ask forgiveness""\nthan permission"\r\n'
    "3,Alan,\r\n"
).encode()
PEOPLE_ROWS = [
    {"id": "1", "name": "Ada", "note": "wrote the first program, 1843"},
    {"id": "2", "name": "Grace", "note": "said \"it's easier to ask forgiveness\"\nthan permission"},
    {"id": "3", "name": "Alan", "note": ""},
]
CONFIG_JSON = {"service": "billing", "replicas": 3, "ratio": 0.25, "enabled": True, "owner": None,
               "regions": ["eu-west-1", "us-east-2"], "limits": {"cpu": "500m", "big": 2**70},
               "name": "Zoë ✓"}


def node(node_id: str, type_: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "position": {"x": 0, "y": 0}, "data": {"config": config}}


def pipeline(parser: dict[str, Any]) -> dict[str, Any]:
    """manual trigger `t` -> the parsing node `p` -> output `o`."""
    return {"nodes": [node("t", "manual_trigger"), parser, node("o", "output")],
            "connections": [{"id": "c1", "source": "t", "target": "p"},
                            {"id": "c2", "source": "p", "target": "o"}]}


async def upload(stage: Stage, name: str, data: bytes) -> str:
    form = FormData()
    form.add_field("file", io.BytesIO(data), filename=name, content_type="application/octet-stream")
    resp = await stage.client.post("/api/files/upload", data=form)
    assert resp.status == 201, await resp.text()
    (item,) = (await resp.json())["items"]
    return str(item["id"])


async def run_parser(stage: Stage, parser: dict[str, Any], **execute: Any) -> dict[str, Any]:
    """Create trigger -> parser -> output, execute it and run it to its end; the final run."""
    workflow = await stage.create_workflow(pipeline(parser))
    run = await stage.execute(workflow["id"], **execute)
    return await run.run_until_complete()


async def test_csv_parse_outputs_the_uploaded_files_real_rows(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "people.csv", PEOPLE_CSV)

    done = await run_parser(flowstage, node("p", "csv_parse", fileIds=[file_id]))

    assert done["state"] == "completed"
    expected = {"rows": PEOPLE_ROWS, "rowCount": 3, "columns": ["id", "name", "note"], "columnCount": 3,
                "truncated": False}
    assert done["nodes"]["p"]["output"] == expected
    # Downstream nodes receive the real rows too.
    assert done["nodes"]["o"]["output"] == {"name": "result", "value": expected}


async def test_csv_parse_honours_delimiter_and_no_header(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "scores.csv", b"Ada;97;1.5\nGrace;88;\n")

    done = await run_parser(flowstage, node("p", "csv_parse", fileIds=[file_id], delimiter=";", hasHeader=False))

    assert done["nodes"]["p"]["output"] == {
        "rows": [["Ada", "97", "1.5"], ["Grace", "88", ""]], "rowCount": 2, "columns": None, "columnCount": 3,
        "truncated": False}


async def test_a_large_csv_outputs_its_first_1000_rows_and_counts_them_all(flowstage: Stage) -> None:
    body = "".join(f"{i},item-{i}\n" for i in range(2500))
    file_id = await upload(flowstage, "big.csv", ("n,label\n" + body).encode())

    output = (await run_parser(flowstage, node("p", "csv_parse", fileIds=[file_id])))["nodes"]["p"]["output"]

    assert output["rows"] == [{"n": str(i), "label": f"item-{i}"} for i in range(1000)]
    assert (output["rowCount"], output["truncated"]) == (2500, True)


async def test_json_parse_outputs_the_uploaded_files_real_value(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "config.json", json.dumps(CONFIG_JSON, indent=2).encode())

    done = await run_parser(flowstage, node("p", "json_parse", fileIds=[file_id]))

    assert done["state"] == "completed"
    assert done["nodes"]["p"]["output"] == CONFIG_JSON
    assert done["nodes"]["o"]["output"] == {"name": "result", "value": CONFIG_JSON}


async def test_json_parse_of_a_top_level_array(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "list.json", b"\xef\xbb\xbf[1, \"two\", [3.5, false]]\n")

    done = await run_parser(flowstage, node("p", "json_parse", fileIds=[file_id]))

    assert done["nodes"]["p"]["output"] == [1, "two", [3.5, False]]


async def assert_node_failed(done: dict[str, Any], message: str) -> None:
    assert done["state"] == "failed"
    assert done["nodes"]["p"]["state"] == "failed"
    assert done["nodes"]["p"]["error"]["message"] == message
    assert done["nodes"]["o"]["state"] == "skipped"
    assert done["error"]["nodeId"] == "p"


async def test_a_csv_with_a_ragged_row_fails_the_node_naming_file_and_line(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "ragged.csv", b"id,name\n1,Ada\n2,Grace,extra\n")

    done = await run_parser(flowstage, node("p", "csv_parse", fileIds=[file_id]))

    await assert_node_failed(done, f"MalformedFile: 'ragged.csv' ({file_id}) is not valid CSV: line 3 has 3 "
                                   "field(s); the header has 2.")


async def test_a_csv_with_a_broken_quote_fails_the_node(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "quote.csv", b'id,name\n1,"Ada" Lovelace\n')

    done = await run_parser(flowstage, node("p", "csv_parse", fileIds=[file_id]))

    await assert_node_failed(done, f"MalformedFile: 'quote.csv' ({file_id}) is not valid CSV: line 2: "
                                   "',' expected after '\"'.")


async def test_a_csv_that_is_not_utf8_fails_the_node(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "latin1.csv", "id,city\n1,Zürich\n".encode("latin-1"))

    done = await run_parser(flowstage, node("p", "csv_parse", fileIds=[file_id]))

    await assert_node_failed(done, f"MalformedFile: 'latin1.csv' ({file_id}) is not UTF-8 text: byte 0xfc at "
                                   "offset 11 does not decode.")


async def test_malformed_json_fails_the_node_with_where(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "bad.json", b'{"a": 1,}')

    done = await run_parser(flowstage, node("p", "json_parse", fileIds=[file_id]))

    await assert_node_failed(done, f"MalformedFile: 'bad.json' ({file_id}) is not valid JSON: trailing comma "
                                   "in object (byte 8).")


async def test_truncated_json_fails_the_node(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "cut.json", b'{"items": [1, 2')

    done = await run_parser(flowstage, node("p", "json_parse", fileIds=[file_id]))

    await assert_node_failed(done, f"MalformedFile: 'cut.json' ({file_id}) is not valid JSON: it ends before "
                                   "its value does.")


async def test_json_over_one_mebibyte_fails_the_node_instead_of_filling_an_event(flowstage: Stage) -> None:
    big = json.dumps(["x" * 1000] * 1100).encode()  # about 1.1 MB
    file_id = await upload(flowstage, "big.json", big)

    done = await run_parser(flowstage, node("p", "json_parse", fileIds=[file_id]))

    await assert_node_failed(done, f"FileTooLarge: 'big.json' ({file_id}) is larger than 1048576 bytes, the most "
                                   "JSON a json_parse node outputs (its value travels in one event).")


async def test_a_deleted_file_fails_the_node_naming_it(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "gone.csv", b"a,b\n1,2\n")
    workflow = await flowstage.create_workflow(pipeline(node("p", "csv_parse", fileIds=[file_id])))
    assert (await flowstage.client.delete(f"/api/files/{file_id}")).status == 204

    done = await (await flowstage.execute(workflow["id"])).run_until_complete()

    await assert_node_failed(done, f"NotFound: No file with id '{file_id}'.")


async def test_nodes_without_a_file_keep_their_mock_output(flowstage: Stage) -> None:
    csv_out = (await run_parser(flowstage, node("p", "csv_parse"), seed=7))["nodes"]["p"]["output"]
    json_out = (await run_parser(flowstage, node("p", "json_parse"), seed=7))["nodes"]["p"]["output"]

    assert set(csv_out) == {"rows", "rowCount"}
    assert 2 <= csv_out["rowCount"] == len(csv_out["rows"]) <= 4
    assert set(csv_out["rows"][0]) == {"id", "name", "amount"}
    assert set(json_out) == {"id", "name", "tags", "active"}
    # Seeded: the same seed gives the same mock output.
    again = (await run_parser(flowstage, node("p", "csv_parse"), seed=7))["nodes"]["p"]["output"]
    assert again == csv_out


async def test_execute_inputs_can_name_the_file_as_process_files_does(flowstage: Stage) -> None:
    file_id = await upload(flowstage, "people.csv", PEOPLE_CSV)

    done = await run_parser(flowstage, node("p", "csv_parse"), inputs={"fileIds": [file_id]})

    assert done["nodes"]["p"]["output"]["rows"] == PEOPLE_ROWS


async def test_several_files_give_one_result_per_file(flowstage: Stage) -> None:
    first = await upload(flowstage, "a.json", b'{"n": 1}')
    second = await upload(flowstage, "b.json", b'{"n": 2}')

    done = await run_parser(flowstage, node("p", "json_parse", fileIds=[first, second]))

    assert done["nodes"]["p"]["output"] == {"count": 2, "files": [
        {"sourceFileId": first, "name": "a.json", "result": {"n": 1}},
        {"sourceFileId": second, "name": "b.json", "result": {"n": 2}}]}


async def test_process_files_parses_each_file(flowstage: Stage) -> None:
    people = await upload(flowstage, "people.csv", PEOPLE_CSV)
    pairs = await upload(flowstage, "pairs.csv", b"k,v\nx,1\n")
    workflow = await flowstage.create_workflow({"nodes": [node("p", "csv_parse")]})

    resp = await flowstage.client.post(f"/api/workflows/{workflow['id']}/nodes/p/process-files",
                                       json={"fileIds": [people, pairs]})
    assert resp.status == 202
    done = await RunHandle(flowstage, (await resp.json())["id"], workflow["id"]).run_until_complete()

    assert done["state"] == "completed"
    output = done["nodes"]["p"]["output"]
    assert output["count"] == 2
    assert [(f["sourceFileId"], f["name"]) for f in output["files"]] == [(people, "people.csv"), (pairs, "pairs.csv")]
    assert output["files"][0]["result"]["rows"] == PEOPLE_ROWS
    assert output["files"][1]["result"] == {"rows": [{"k": "x", "v": "1"}], "rowCount": 1, "columns": ["k", "v"],
                                            "columnCount": 2, "truncated": False}


async def test_json_parse_is_a_node_type_and_file_ids_are_part_of_the_config(flowstage: Stage) -> None:
    resp = await flowstage.client.get("/api/node-types")
    assert resp.status == 200
    kinds = {kind["type"]: kind for kind in (await resp.json())["items"]}
    assert (kinds["json_parse"]["category"], kinds["json_parse"]["label"]) == ("file", "Parse JSON")
    for parser in ("csv_parse", "json_parse"):
        assert kinds[parser]["configSchema"]["properties"]["fileIds"] == {
            "type": "array", "items": {"type": "string"}, "title": "Files",
            "description": "Ids of uploaded files to work on (from POST /api/files/upload)."}

    bad = await flowstage.client.post("/api/workflows", json={"name": "Bad", **pipeline(
        node("p", "csv_parse", fileIds="file_1"))})
    assert bad.status == 422


# --- the parsers themselves: plain calls ------------------------------------------------------


def test_csv_rows_stop_at_the_byte_budget_but_all_are_counted() -> None:
    data = b"word\n" + b"".join(b"%06d\n" % i for i in range(100))  # each row: 6 chars + 3

    result = parse_csv(io.BytesIO(data), max_bytes=45)

    assert result["rows"] == [{"word": f"{i:06d}"} for i in range(5)]
    assert (result["rowCount"], result["truncated"]) == (100, True)


def test_a_csv_field_over_the_csv_modules_limit_is_malformed() -> None:
    data = b"a,b\n1," + b"x" * 200_000 + b"\n"

    with pytest.raises(MalformedFile, match=r"^f\.csv is not valid CSV: line 2: field larger than field limit"):
        parse_csv(io.BytesIO(data), name="f.csv")


def test_a_json_file_that_does_not_fit_what_earlier_files_left_says_so() -> None:
    with pytest.raises(FileTooLarge) as caught:
        parse_json(io.BytesIO(b'{"n": 12345}'), name="b.json", max_bytes=10)

    assert str(caught.value) == (f"b.json is larger than 10 bytes, what the files before it left of the "
                                 f"{MAX_PARSED_BYTES} bytes a json_parse node outputs.")


def test_json_numbers_beyond_a_double_are_malformed_for_flowstage() -> None:
    with pytest.raises(MalformedFile, match=r"^n\.json holds JSON Flowstage cannot represent: Number out of range"):
        parse_json(io.BytesIO(b"[1e999]"), name="n.json")
