"""The HTML run report: self-contained, shows fit quality / config / figures, tolerant of missing files."""
from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from popsed_jax.products import report
from popsed_jax.inference.config import FitConfig

RUNS = Path(__file__).resolve().parents[2] / "runs"


def _png(path: Path, label: str):
    from popsed_jax.products.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2, 0.9))
    ax.plot([0, 1], [0, 1])
    ax.set_title(label, fontsize=5)
    fig.savefig(path, dpi=40)
    plt.close(fig)


def _make_run(tmp_path: Path, figures=("loss.png", "ppc.png", "corner.png")) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    cfg = FitConfig(members=3, steps=345, lr=1.25e-3, limit="r<17.77").to_dict()
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    summary = {
        "steps": 345, "members": 3, "epsilon_final": 0.02,
        "val_divergence": [0.5983, 2.1234, 0.4711], "data_floor": 0.4285,
        "val_over_floor": [0.5983 / 0.4285, 2.1234 / 0.4285, 0.4711 / 0.4285],
        "flagged_members": [1], "seconds": 3725.0, "devices": 1, "sharded": False,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "run_info.json").write_text(json.dumps({"catalog": "sdss <main>", "n_catalog": 10000,
                                                    "bands": ["sdss2001-u", "sdss2001-g", "sdss2001-r"]}))
    for f in figures:
        _png(run / f, f)
    return run


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def _check_self_contained(text: str) -> list[str]:
    low = text.lower()
    assert 'src="http' not in low and "href=\"http" not in low and "url(http" not in low and "<script" not in low
    assert "<link" not in low
    p = _Imgs()
    p.feed(text)
    for src in p.srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        from PIL import Image

        Image.open(io.BytesIO(data)).verify()  # a real, decodable PNG
    # every href is an internal anchor
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))
    return p.srcs


def test_report_contents(tmp_path):
    run = _make_run(tmp_path)
    out = report.write_report(run)
    assert out == run / "report.html" and out.is_file()
    text = out.read_text()
    srcs = _check_self_contained(text)
    assert len(srcs) == 3  # loss, ppc, corner
    # the embedded images are the run's files, byte for byte
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in srcs}
    assert embedded == {(run / f).read_bytes() for f in ("loss.png", "ppc.png", "corner.png")}
    # fit quality: divergences, floor and val/floor ratios
    for v in ("0.5983", "2.123", "0.4711", "0.4285", "1.40", "4.96", "1.10"):
        assert v in text, v
    # member 1 flagged, highlighted; members 0 and 2 are not
    rows = re.findall(r'<tr( class="flagged")?><td class="num">(\d)</td>', text)
    assert dict((int(m), bool(c)) for c, m in rows) == {0: False, 1: True, 2: False}
    assert "FLAGGED" in text and "1 of 3 member(s) flagged" in text
    # header: catalog escaped, steps, members, wall time
    assert "sdss &lt;main&gt;" in text and "sdss <main>" not in text
    assert "1 h 02 min 05 s" in text and "345" in text
    # config values shown
    for k in ("flow_hidden", "noise_tau", "val_every", "selection_width", "met_mode"):
        assert f"<th>{k}</th>" in text
    assert "0.00125" in text and "r&lt;17.77" in text
    # missing optional files listed
    note = re.search(r"<b>Not available</b>(.*?)</div>", text).group(1)
    for f in ("noise_model.png", "science.json", "evaluation.json", "nz.png", "corner_vs_truth.png"):
        assert f in note
    for f in ("loss.png", "ppc.png", "corner.png", "run_info.json"):
        assert f not in note


def test_report_science_and_evaluation(tmp_path):
    run = _make_run(tmp_path, figures=("loss.png", "nz.png", "corner_vs_truth.png", "extra_diag.png"))
    science = {
        "area_deg2": 7500.0,
        "w1_nz": {"z": [0.01 * i for i in range(60)], "dndz": [float(i) for i in range(60)], "note": "per deg2"},
        "quantities": {
            "logM_surviving": {"median": 10.61, "p16": 10.12, "p84": 11.03},
            "log_ssfr_100myr": {"median": -10.9, "p16": -11.8, "p84": -10.1},
        },
        "smf": [{"logM": 10.0, "phi": 1.2e-3}, {"logM": 10.5, "phi": 9.8e-4}],
        "odd <key>": [[1, 2], [3, 4]],
    }
    (run / "science.json").write_text(json.dumps(science))
    (run / "evaluation.json").write_text(json.dumps({"normalized_w1": {"z": 0.3448, "beta2": 28.92}, "n_truth": 10000}))
    text = report.write_report(run, out=tmp_path / "sub" / "r.html").read_text()
    assert len(_check_self_contained(text)) == 4  # loss, nz, corner_vs_truth, extra figure
    assert "Other figures" in text and "extra_diag.png" in text
    # science: every key and a summary of median and 16-84% per quantity
    for k in ("area_deg2", "w1_nz", "dndz", "logM_surviving", "log_ssfr_100myr", "per deg2", "phi", "0.00098"):
        assert k in text, k
    assert "10.61 [10.12, 11.03]" in text and "-10.9 [-11.8, -10.1]" in text
    assert "odd &lt;key&gt;" in text and "odd <key>" not in text
    assert "60 rows" in text  # long columns are summarised, not dropped silently
    # evaluation: normalized W1 per quantity
    assert re.search(r"<th>z</th><td class=\"num good\">0.345</td>", text)
    assert re.search(r"<th>beta2</th><td class=\"num bad\">28.920</td>", text)
    note = re.search(r"<b>Not available</b>(.*?)</div>", text).group(1)
    assert "science.json" not in note and "evaluation.json" not in note and "ppc.png" in note


def test_report_tolerates_broken_optional_files(tmp_path):
    run = _make_run(tmp_path)
    (run / "science.json").write_text("{not json")
    (run / "ppc.png").write_bytes(b"GIF89a not a png")
    (run / "run_info.json").unlink()
    text = report.write_report(run).read_text()
    assert "Could not be read" in text and "science.json" in text and "ppc.png (not a PNG file)" in text
    assert len(_check_self_contained(text)) == 2
    assert "run_info.json" in re.search(r"<b>Not available</b>(.*?)</div>", text).group(1)


@pytest.mark.parametrize("missing", ["config.json", "summary.json"])
def test_not_a_run_folder(tmp_path, missing):
    run = _make_run(tmp_path)
    (run / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        report.write_report(run)
    assert not (run / "report.html").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.write_report(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["sdss", "mock_fit"])
def test_report_on_real_runs(tmp_path, name):
    run = RUNS / name
    if not (run / "summary.json").exists():
        pytest.skip(f"{run} not present")
    out = report.write_report(run, out=tmp_path / f"{name}.html")
    text = out.read_text()
    srcs = _check_self_contained(text)
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['val_over_floor'][0]:.2f}" in text
    assert len(srcs) == len(list(run.glob("*.png")))
    if (run / "evaluation.json").exists():
        assert "normalized W1" in text
