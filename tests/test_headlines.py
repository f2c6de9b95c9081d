"""README.md and the docs' headline numbers are generated from the committed benchmark records."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import headlines  # noqa: E402


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    return headlines.generate()


@pytest.mark.parametrize("rel", headlines.TARGETS)
def test_committed_blocks_equal_what_the_records_give(rel, blocks):
    found = headlines.blocks_in((ROOT / rel).read_text())
    assert found, f"{rel} has no generated block"
    for name, body in found.items():
        assert body == blocks[name], f"{rel}: the {name} block differs from its records; run benchmarks/headlines.py"


def test_readme_headlines_are_all_generated():
    found = headlines.blocks_in((ROOT / "README.md").read_text())
    assert set(found) >= {"painting-loop", "robustness", "quality", "speed", "cli-check", "objects", "pretraining"}
    results = (ROOT / "README.md").read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    bullets = [line for line in results.splitlines() if line.startswith("* ")]
    # every headline bullet of the Results section sits inside a generated block
    generated = "\n".join(found[n] for n in ("painting-loop", "robustness", "quality", "speed", "objects",
                                              "pretraining"))
    assert bullets and all(b in generated for b in bullets)


def test_fill_replaces_a_hand_edit_and_keeps_the_rest(blocks):
    text = ("intro\n<!-- speed:start -->\n* typed by hand: 0.1 s\n<!-- speed:end -->\noutro\n"
            "- item\n\n  <!-- quality-variants:start -->\n  | old |\n  <!-- quality-variants:end -->\n")
    out = headlines.fill(text, blocks)
    assert out.startswith("intro\n<!-- speed:start -->\n" + blocks["speed"] + "\n<!-- speed:end -->\noutro\n")
    assert "typed by hand" not in out and "| old |" not in out
    assert headlines.blocks_in(out) == {"speed": blocks["speed"], "quality-variants": blocks["quality-variants"]}
    assert "\n  | variant |" in out  # an indented block stays indented (inside a list item)
    assert headlines.fill(out, blocks) == out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "docs" / "data", tmp_path / "data")
    return tmp_path / "data"


def rewrite_jsonl(path: Path, change) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(change(r)) + "\n" for r in records))


def test_quality_numbers_come_from_the_records(data, blocks):
    def change(r):
        if r["dataset"] == "cells3d" and r["method"] == "random_forest" and r["level"] == "1":
            r["dice"] = 0.5
        if r["dataset"] == "bbbc007" and r["method"] == "btunet:rca_iunet:bt":
            r["dice"] += 0.2  # now pre-training helps rca_iunet on BBBC007
        if "finetune_budget_s" in r:
            r["finetune_budget_s"] = 60.0
        return r
    rewrite_jsonl(data / "quality_full.jsonl", change)
    new = headlines.generate(data)
    assert "random forest gets 0.95 / 0.94 / 0.50," in new["quality"]
    assert "random forest gets 0.95 / 0.94 / 0.83," in blocks["quality"]
    assert "60 s of fine-tuning" in new["quality"] and "90 s of fine-tuning" in blocks["quality"]
    assert blocks["quality"].endswith("on BBBC007 and CHO, or `rca_iunet`.")
    assert new["quality"].endswith("on BBBC007 and CHO, or `rca_iunet` on average on CHO.")
    assert "helps `inception_unet`: on BBBC007 at 1 image 0.979 vs 0.958 from scratch" in blocks["quality"]
    assert "`rca_iunet` | **1.133** / 0.962 | **1.165** / 0.974 |" in new["quality-variants"]


def test_quality_falls_back_to_the_quick_run(data):
    (data / "quality_full.jsonl").unlink()
    quick = headlines.generate(data)["quality"]
    rec = next(json.loads(line) for line in (data / "quality_quick.jsonl").read_text().splitlines()
               if '"btunet:unet:scratch"' in line and '"level": "1"' in line)
    assert f"reaches {rec['dice']:.2f} on BBBC007" in quick


def test_speed_numbers_come_from_the_record(data, blocks):
    r = json.loads((data / "speed.json").read_text())
    next(x for x in r["inference"] if x["variant"] == "unet")["fast_ms_per_mp"] = 1234.0
    r["cli"]["overhead"] = 1.31
    r["memory"][-1]["vm_hwm_kb"] = 2048 * 1024
    (data / "speed.json").write_text(json.dumps(r))
    new = headlines.generate(data)["speed"]
    assert "about 1.2 s on the CPU fast path" in new and "about 0.2 s" in blocks["speed"]
    assert "takes 1.31x the network time end to end" in new
    assert "no measurable overhead to the network time (0.96x)" in blocks["speed"]
    assert "Peak memory grows with stack length: 689 → 2048 MB" in new
    assert "stays flat with stack length: 689 → 716 MB for 16 → 64 planes of 2048²" in blocks["speed"]


def test_painting_loop_and_cli_check_come_from_the_records(data, blocks):
    rewrite_jsonl(data / "interactive.jsonl",
                  lambda r: {**r, "dice": 0.5} if (r["dataset"], r["method"], r["round"]) == ("cho_3dt", "rf", 0)
                  else r)
    table = (data / "bbbc007_cli_check.txt").read_text().splitlines()
    (data / "bbbc007_cli_check.txt").write_text("\n".join(
        [line.replace(line.split()[1], "0.9012", 1) if line.startswith("mean") else line for line in table]))
    new = headlines.generate(data)
    unet = [json.loads(line)["dice"] for line in (data / "interactive.jsonl").read_text().splitlines()
            if '"cho_3dt"' in line and '"method": "scratch"' in line and '"round": 0' in line]
    assert f"`cho_3dt` (3 seeds): strokes only {sum(unet) / len(unet):.3f} (forest 0.500)" in new["painting-loop"]
    assert "(forest 0.896)" in blocks["painting-loop"]
    assert "mean Dice of 0.901;" in new["cli-check"] and "mean Dice of 0.977;" in blocks["cli-check"]


def test_pretraining_numbers_come_from_the_paired_records(data, blocks):
    enc, setting = headlines.BUILTIN_RECORD
    records = [json.loads(line) for line in (data / "pretraining_same_code.jsonl").read_text().splitlines()]
    cho = [r for r in records if r["dataset"] == "cho_3dt" and r["ft_epochs"] == 4 and r.get("images", 1) == 1]
    seeds = {r["seed"] for r in cho if r["encoder"] == enc and r["setting"] == setting}
    diffs = [next(r["dice"] for r in cho if r["seed"] == k and r["encoder"] == enc and r["setting"] == setting)
             - next(r["dice"] for r in cho if r["seed"] == k and r["encoder"] == "scratch") for k in sorted(seeds)]
    assert f"CHO {sum(diffs) / len(diffs):+.3f}" in blocks["pretraining"]
    # one from-scratch run 0.1 lower moves the mean paired gain by 0.1 / seeds
    rewrite_jsonl(data / "pretraining_same_code.jsonl",
                  lambda r: {**r, "dice": r["dice"] - 0.1} if (r["dataset"], r["encoder"], r["seed"], r["ft_epochs"])
                  == ("cho_3dt", "scratch", 0, 4) else r)
    new = headlines.generate(data)["pretraining"]
    assert f"CHO {sum(diffs) / len(diffs) + 0.1 / len(diffs):+.3f}" in new


def test_the_builtin_record_names_the_shipped_encoder():
    from btunet.train.builtin_encoder import builtin_metadata
    meta = builtin_metadata()
    info = next(json.loads(line)["encoder_info"] for line in
                (ROOT / "docs" / "data" / "pretraining_same_code.jsonl").read_text().splitlines()
                if json.loads(line)["encoder"] == headlines.BUILTIN_RECORD[0])
    assert (info["epochs"], info["seconds"]) == (meta["epochs"], meta["seconds"])


def test_update_rewrites_a_stale_file(tmp_path, blocks):
    (tmp_path / "README.md").write_text("<!-- speed:start -->\nstale\n<!-- speed:end -->\n")
    changed = headlines.update(tmp_path, ROOT / "docs" / "data")
    assert changed == [tmp_path / "README.md"]
    assert (tmp_path / "README.md").read_text() == f"<!-- speed:start -->\n{blocks['speed']}\n<!-- speed:end -->\n"
    assert headlines.update(tmp_path, ROOT / "docs" / "data") == []


def test_generation_needs_no_torch():
    code = "import sys, headlines; headlines.generate(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "benchmarks", capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_benchmarks_import_no_private_engine_names():
    import ast
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("btunet"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


#: notes files that their benchmark copies into results pages (the others are linked)
COPIED_NOTES = {"dense_pretraining": ("results_dense_pretraining.md", "results.md"),
                "empty_planes": ("results_empty_planes.md",), "fused": ("results_fused.md", "results.md"),
                "pretraining": ("results_pretraining.md", "results.md"),
                "quality": ("results_quality.md", "results.md"), "speed": ("results_speed.md", "results.md")}


@pytest.mark.parametrize("name", sorted(COPIED_NOTES))
def test_pages_hold_the_current_text_of_their_notes(name):
    notes = (ROOT / "benchmarks" / f"{name}_notes.md").read_text()
    for page in COPIED_NOTES[name]:
        assert notes in (ROOT / "docs" / page).read_text(), (
            f"docs/{page} has an older {name}_notes.md: rerun its benchmark's report")


def test_robustness_numbers_come_from_the_held_out_records(data, blocks):
    """The held-out block: U-Net minus forest per style, from the records; the README says so."""
    records = [json.loads(line) for line in (data / "robustness.jsonl").read_text().splitlines()]

    def dice(method):
        values = [r["dice"] for r in records if (r["dataset"], r["method"], r["round"], r.get("style", "blobs"))
                  == ("phc_psc", method, 0, "blobs")]
        return sum(values) / len(values)
    blobs = next(line for line in blocks["robustness"].splitlines() if "`phc_psc`" in line).split("; ")[0]
    assert blobs.split(") ")[1].startswith(f"{dice('scratch') - dice('rf'):+.3f} ->")
    assert "held out: no default was chosen on them" in blocks["robustness"]
    rewrite_jsonl(data / "robustness.jsonl",
                  lambda r: {**r, "dice": r["dice"] - 0.25} if (r["dataset"], r["method"], r["round"], r.get("style"))
                  == ("phc_psc", "scratch", 0, "blobs") else r)
    new = next(line for line in headlines.generate(data)["robustness"].splitlines() if "`phc_psc`" in line)
    assert new.split("; ")[0].split(") ")[1].startswith(f"{dice('scratch') - 0.25 - dice('rf'):+.3f} ->")
