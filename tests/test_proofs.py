"""Inclusion proofs (DESIGN §2): `prove` returns an audit path to the tree head
the document recorded, and the dependency-free verifier in docs/PROOFS.md,
extracted from the doc and run as is, accepts it and rejects forgeries."""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, calls, clock, close_january, setup
from tests.support import event, ingest
from typer.testing import CliRunner

from meterline.cli.app import app
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.services import invoicing
from meterline.services.proofs import prove
from meterline.store import merkle, sequence
from meterline.store.database import Store

DOC = Path(__file__).resolve().parents[1] / "docs" / "PROOFS.md"


def doc_verifier() -> dict[str, Any]:
    """The ```python verifier block of docs/PROOFS.md, executed with builtins only."""
    match = re.search(r"```python verifier\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/PROOFS.md has no verifier block"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), str(DOC), "exec"), namespace)
    return namespace


def world(store: Store) -> dict[str, Any]:
    setup(store)
    odd = event(
        "odd\u00e9\n",
        time="2024-01-03T00:00:00Z",
        props={"note": 'caf\u00e9 \u2028 "q" \\ \u0001 \u007f', "n": Decimal("1.50")},
    )
    ingest(store, clock(FEB), [*calls(40), odd])
    close_january(store)
    [doc] = invoicing.issue(store, "2024-01", FEB_US).issued
    return doc.to_dict()


def test_prove_and_verify_with_the_documented_function(store: Store) -> None:
    doc = world(store)
    verifier = doc_verifier()
    head = doc["tree_head"]
    with store.read() as conn:
        assert head == merkle.head(conn, doc["cutoff_seq"]).to_json()
    assert head["size"] == doc["cutoff_seq"]
    for event_id, source in [("c0", None), ("c39", "default"), ("odd\u00e9\n", "default")]:
        proof = prove(store, doc["number"], event_id, source)
        assert proof["verified"] and proof["root"] == head["root"]
        assert proof["tree_size"] == head["size"] and proof["leaf_index"] == proof["seq"] - 1
        assert verifier["event_content_hash"](proof["event"]).hex() == proof["content_hash"]
        assert verifier["verify"](doc, proof)
        # A forged event (not in the log) with the genuine path does not verify.
        forged = copy.deepcopy(proof)
        forged["event"]["event_id"] = "not-in-the-log"
        assert not verifier["verify"](doc, forged)
        forged = copy.deepcopy(proof)
        forged["event"]["properties"] = '{"n":2}'
        assert not verifier["verify"](doc, forged)
        # A tampered sibling, a wrong index, a shortened path do not verify.
        tampered = copy.deepcopy(proof)
        first = tampered["audit_path"][0]
        tampered["audit_path"][0] = ("0" if first[0] != "0" else "1") + first[1:]
        assert not verifier["verify"](doc, tampered)
        moved = dict(proof, leaf_index=proof["leaf_index"] ^ 1)
        assert not verifier["verify"](doc, moved)
        assert not verifier["verify"](doc, dict(proof, audit_path=proof["audit_path"][1:]))
        # Another document's head does not match.
        other = dict(doc, tree_head={"size": head["size"], "root": "00" * 32})
        assert not verifier["verify"](other, proof)


def test_clear_errors(store: Store) -> None:
    doc = world(store)
    ingest(store, clock(FEB), [event("after", time="2024-01-20T00:00:00Z")])
    cases = [
        ("INV-000009", "c0", None, ErrorCode.DOCUMENT_NOT_FOUND),
        (doc["number"], "nope", None, ErrorCode.EVENT_NOT_FOUND),
        (doc["number"], "c0", "gateway", ErrorCode.EVENT_NOT_FOUND),
        (doc["number"], "after", None, ErrorCode.EVENT_AFTER_CUTOFF),
    ]
    for number, event_id, source, code in cases:
        with pytest.raises(MeterlineError) as info:
            prove(store, number, event_id, source)
        assert info.value.code == code, info.value.message
    ingest(store, clock(FEB), [event("c0", source="other", time="2024-01-20T00:00:00Z")])
    with pytest.raises(MeterlineError) as info:
        prove(store, doc["number"], "c0")
    assert "give --source" in info.value.message
    # A document issued before the Merkle log has no tree head.
    with store.write() as conn:
        body = json.loads(
            conn.execute(
                text("SELECT body FROM documents WHERE number = :n"), {"n": doc["number"]}
            ).scalar_one()
        )
        del body["tree_head"]
        conn.execute(
            text("UPDATE documents SET body = :b WHERE number = :n"),
            {"b": json.dumps(body), "n": doc["number"]},
        )
    with pytest.raises(MeterlineError) as info:
        prove(store, doc["number"], "c0", "default")
    assert info.value.code == ErrorCode.NO_TREE_HEAD


def test_cli_prove(store: Store) -> None:
    doc = world(store)
    runner = CliRunner()
    base = ["--db", store.url, "prove", doc["number"]]
    ok = runner.invoke(app, [*base, "--event", "c3", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == prove(store, doc["number"], "c3")
    human = runner.invoke(app, [*base, "--event", "c3"])
    assert human.exit_code == 0 and "proof verifies" in human.stdout
    missing = runner.invoke(app, [*base, "--event", "nope"])
    assert missing.exit_code == 2 and "EVENT_NOT_FOUND" in missing.stderr
    # The event's row altered behind the system's back: the proof no longer verifies.
    with store.write() as conn:
        conn.execute(
            text("UPDATE events SET properties = :p WHERE event_id = 'c3'"), {"p": '{"x":1}'}
        )
    bad = runner.invoke(app, [*base, "--event", "c3", "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["verified"] is False
    with store.read() as conn:
        assert merkle.size(conn) == sequence.current(conn)
