"""Tests of the example plugin, written as a plugin author would: the `nomad_worker`
fixture (from the nomad_actions pytest plugin) starts a real Temporal dev server and a
worker for this plugin's actions; nothing is downloaded and no internet is needed."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import (
    ActionFailedError,
    get_action_progress,
    get_action_result,
    get_action_status,
    start_action,
)
from nomad_actions_example.formulas.models import FormulasReport

FORMULAS = "nomad_actions_example.formulas:formulas_action"
PUBCHEM = "nomad_actions_example.pubchem:pubchem_action"


def test_formula_analysis(nomad_worker) -> None:
    nomad_worker(package="nomad_actions_example")
    wid = start_action(
        FORMULAS, {"user_id": "me", "formulas": ["H2O", "Ca(OH)2", "C6H12O6", "NaCl", "CO2"]}
    )
    report = get_action_result(wid, timeout=60)
    assert isinstance(report, FormulasReport)
    masses = {m.formula: m.molar_mass for m in report.masses}
    assert masses["H2O"] == pytest.approx(18.015, abs=1e-3)
    assert masses["C6H12O6"] == pytest.approx(180.156, abs=1e-3)
    assert report.heaviest == "C6H12O6" and report.lightest == "H2O"
    assert report.elements["O"] == 4 and report.elements["Na"] == 1
    water = next(m for m in report.masses if m.formula == "H2O")
    assert sum(water.mass_fractions.values()) == pytest.approx(1.0, abs=1e-4)


def test_progress_is_reported(nomad_worker) -> None:
    nomad_worker(FORMULAS)
    wid = start_action(
        FORMULAS,
        {"user_id": "me", "formulas": ["H2O"] * 8, "delay_per_formula": 0.5},
    )
    seen = []
    deadline = time.monotonic() + 60
    while get_action_status(wid) == WorkflowExecutionStatus.RUNNING:
        assert time.monotonic() < deadline
        progress = get_action_progress(wid)
        for activity in progress.activities:
            for detail in activity["heartbeat_details"]:
                if isinstance(detail, dict) and "progress" in detail:
                    seen.append(detail["progress"])
        time.sleep(0.3)
    assert seen, "no progress was reported while the action ran"
    assert all(0 <= p <= 1 for p in seen)


def test_bad_formula_fails_the_action(nomad_worker) -> None:
    nomad_worker(FORMULAS)
    wid = start_action(FORMULAS, {"user_id": "me", "formulas": ["H2O", "Xy3"]})
    with pytest.raises(ActionFailedError, match="unknown element 'Xy'"):
        get_action_result(wid, timeout=60)


class FakePubChem(BaseHTTPRequestHandler):
    """Answers the two PUG REST requests the action makes, for aspirin only."""

    def do_GET(self) -> None:
        if self.path.endswith("/compound/name/aspirin/cids/JSON"):
            body = {"IdentifierList": {"CID": [2244]}}
        elif "/compound/cid/2244/property/" in self.path:
            body = {"PropertyTable": {"Properties": [{"CID": 2244, "MolecularFormula": "C9H8O4"}]}}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_pubchem(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePubChem)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PUBCHEM_BASE_URL", f"http://127.0.0.1:{server.server_port}/rest/pug")
    yield
    server.shutdown()
    server.server_close()


def test_pubchem_lookup(fake_pubchem, nomad_worker) -> None:
    nomad_worker(PUBCHEM)
    wid = start_action(PUBCHEM, {"user_id": "me", "compound": "aspirin"})
    result = get_action_result(wid, timeout=60)
    assert result.cid == 2244 and result.properties["MolecularFormula"] == "C9H8O4"
    unknown = start_action(PUBCHEM, {"user_id": "me", "compound": "unobtainium"})
    with pytest.raises(ActionFailedError, match="HTTP 404"):
        get_action_result(unknown, timeout=60)
