"""The headline numbers of README.md and the docs, generated from the benchmark records.

Every number in a block between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` comes from a
file in docs/data/ (the painting loop, quality, objects and speed records); nothing there is typed by
hand. ``interactive.py``, ``quality.py`` and ``speed.py`` call :func:`update` when they finish,
and tests/test_headlines.py checks that the committed text equals what the records give.

    python benchmarks/headlines.py          # rewrite every block from the records
    python benchmarks/headlines.py --check  # exit 1 if a block differs from its records
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _uncertainty_summary import headline as uncertainty_block

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "data"
#: files that hold generated blocks (a notes file is copied into its results section by its script)
TARGETS = ("README.md", "benchmarks/quality_notes.md", "docs/results_quality.md", "docs/results.md",
           "docs/plugin.md", "docs/how_it_works.md")

DATASETS = ("bbbc007", "cho_3dt", "cells3d")
NAMES = {"bbbc007": "BBBC007", "cho_3dt": "CHO", "cells3d": "`cells3d`"}
VARIANTS = ("unet", "attention_unet", "inception_unet", "rca_iunet")
#: pre-training "helps" where it beats training from scratch by at least this much Dice
GAIN = 0.02
#: `btunet predict` "adds no measurable overhead" below this ratio (network timing varies by ~5 %)
NOISE = 1.05


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def quality_records(data: Path = DATA) -> list[dict]:
    """The full matrix where it exists, else the quick run."""
    return read_jsonl(data / "quality_full.jsonl") or read_jsonl(data / "quality_quick.jsonl")


def mean_dice(records: list[dict], dataset: str, method: str, level: str) -> float | None:
    d = [r["dice"] for r in records if r["dataset"] == dataset and r["method"] == method and r["level"] == level]
    return float(np.mean(d)) if d else None


# ------------------------------------------------------------------------------- painting loop
def painting_loop_block(records: list[dict]) -> str:
    """Strokes only and after the last correction round, `unet` from scratch against the forest."""
    lines = [("* **The painting loop** (U-Net from scratch, mean test Dice; "
              "[docs/results_interactive.md](docs/results_interactive.md)):")]
    for ds_name in DATASETS:
        def dice(method: str, rnd: int, ds_name: str = ds_name) -> str:
            d = [r["dice"] for r in records if r["dataset"] == ds_name and r["method"] == method and r["round"] == rnd]
            return f"{np.mean(d):.3f}" if d else "—"
        if not any(r["dataset"] == ds_name for r in records):
            continue
        last = max((r["round"] for r in records if r["dataset"] == ds_name and r["method"] == "scratch"), default=0)
        seeds = len({r["seed"] for r in records if r["dataset"] == ds_name and r["method"] == "scratch"})
        lines.append(f"  * `{ds_name}` ({seeds} seed{'s' if seeds > 1 else ''}): strokes only {dice('scratch', 0)} "
                     f"(forest {dice('rf', 0)}); after {last} correction rounds {dice('scratch', last)} "
                     f"(forest {dice('rf', last)}; forest on one full mask {dice('rf_full', 0)}).")
    return "\n".join(lines)


def robustness_block(records: list[dict]) -> str:
    """The held-out sets: `unet` from scratch against the forest under the same strokes, per style."""
    lines = [("* **Beyond the tuning sets and the simulated user** (sets marked held out: no default was chosen "
              "on them; U-Net from scratch minus the forest under the same strokes, test Dice, strokes only -> "
              "after the last correction round; [docs/results_robustness.md](docs/results_robustness.md)):")]

    def dice(ds: str, style: str, method: str, rnd: int) -> float | None:
        d = [r["dice"] for r in records if r["dataset"] == ds and r.get("style", "blobs") == style
             and r["method"] == method and r["round"] == rnd]
        return float(np.mean(d)) if d else None
    found = list(dict.fromkeys(r["dataset"] for r in records))
    for ds in [d for d in DATASETS if d in found] + [d for d in found if d not in DATASETS]:
        parts = []
        styles = ("blobs", "along", "scribble", "hurried")
        for style in styles if ds not in DATASETS else styles[1:]:  # tuning sets' blobs: the block above
            rounds = sorted({r["round"] for r in records if r["dataset"] == ds and r["method"] == "scratch"
                             and r.get("style", "blobs") == style})
            if not rounds or dice(ds, style, "rf", rounds[-1]) is None:
                continue
            first = dice(ds, style, "scratch", 0) - dice(ds, style, "rf", 0)
            last = dice(ds, style, "scratch", rounds[-1]) - dice(ds, style, "rf", rounds[-1])
            seeds = len({r["seed"] for r in records if r["dataset"] == ds and r["method"] == "scratch"
                         and r.get("style", "blobs") == style})
            parts.append(f"{style} ({seeds} seed{'s' if seeds > 1 else ''}) {first:+.3f} -> {last:+.3f}")
        if parts:
            lines.append(f"  * `{ds}`{'' if ds in DATASETS else ', held out'}: {'; '.join(parts)}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- quality
def budgets(records: list[dict]) -> str:
    """"90 s of fine-tuning, 120 s of pre-training", from the budgets the runs recorded."""
    def span(key: str) -> str | None:
        values = sorted({r[key] for r in records if r.get(key)})
        if not values:
            return None
        return f"{values[0]:g} s" if len(values) == 1 else f"{values[0]:g}-{values[-1]:g} s"
    parts = [f"{s} of {what}" for s, what in ((span("finetune_budget_s"), "fine-tuning"),
                                              (span("pretrain_budget_s"), "pre-training")) if s]
    return "; " + ", ".join(parts) if parts else ""


def pretraining_effects(records: list[dict]) -> tuple[list[tuple], list[tuple]]:
    """(gains, losses): gains are (variant, dataset, level, bt, scratch) with bt >= scratch + GAIN at
    1-2 images; losses are (variant, dataset) where bt is below scratch on average over 1-2 images."""
    gains, losses = [], []
    for variant in VARIANTS:
        for ds in DATASETS:
            diffs = []
            for level in ("1", "2"):
                bt = mean_dice(records, ds, f"btunet:{variant}:bt", level)
                sc = mean_dice(records, ds, f"btunet:{variant}:scratch", level)
                if bt is None or sc is None:
                    continue
                diffs.append(bt - sc)
                if bt - sc >= GAIN:
                    gains.append((variant, ds, level, bt, sc))
            if diffs and np.mean(diffs) < 0:
                losses.append((variant, ds))
    return gains, losses


def images(level: str) -> str:
    return f"{level} image{'s' if level != '1' else ''}"


def pretraining_sentences(records: list[dict]) -> list[str]:
    gains, losses = pretraining_effects(records)
    out = []
    by_variant = {v: [g for g in gains if g[0] == v] for v in VARIANTS}
    order = sorted((v for v in VARIANTS if by_variant[v]), key=lambda v: -len(by_variant[v]))
    if order:
        first, *others = order
        cases = [f"on {NAMES[ds]} at {images(lv)} {bt:.3f} vs {sc:.3f}" + (" from scratch" if i == 0 else "")
                 for i, (_, ds, lv, bt, sc) in enumerate(by_variant[first])]
        text = f"Barlow Twins pre-training of this length helps `{first}`: {', '.join(cases)}."
        for v in others:
            text += " It also helps `{}` {}.".format(v, " and ".join(
                f"on {NAMES[ds]} at {images(lv)} ({bt:.3f} vs {sc:.3f})" for _, ds, lv, bt, sc in by_variant[v]))
        out.append(text)
    parts = []
    for v in VARIANTS:
        lost = [ds for variant, ds in losses if variant == v]
        ran = [ds for ds in DATASETS if mean_dice(records, ds, f"btunet:{v}:bt", "1") is not None
               or mean_dice(records, ds, f"btunet:{v}:bt", "2") is not None]
        if lost:
            parts.append(f"`{v}`" if lost == ran else
                         f"`{v}` on average on {' and '.join(NAMES[ds] for ds in lost)}")
    if parts:
        out.append(f"It does not help {', or '.join(parts)}.")
    return out


def quality_block(records: list[dict]) -> str:
    """One annotated image: `unet`, the forest and MONAI; where Barlow Twins pre-training helps."""
    sets = [ds for ds in DATASETS if mean_dice(records, ds, "btunet:unet:scratch", "1") is not None]

    def row(method: str) -> list[str]:
        return [f"{mean_dice(records, ds, method, '1'):.2f}" if mean_dice(records, ds, method, "1") is not None
                else "—" for ds in sets]
    unet = row("btunet:unet:scratch")
    named = [f"{d} on {NAMES[ds]}" for d, ds in zip(unet, sets, strict=True)]
    reach = ", ".join(named[:-1]) + (" and " if len(named) > 1 else "") + named[-1] if named else "—"
    lines = [(f"* **Quality** (Dice on held-out images{budgets(records)}; "
              "[docs/results_quality.md](docs/results_quality.md)):"),
             f"  * `unet` from one annotated image reaches {reach}."]
    baselines = [f"{label} {' / '.join(row(m))}" for m, label in
                 (("random_forest", "An ilastik-style random forest gets"),
                  ("monai_basicunet", "a MONAI BasicUNet trained for the same time"))
                 if any(r["method"] == m for r in records)]
    if baselines:
        lines.append(f"  * {', and '.join(baselines)}.")
    lines += [f"  * {s}" for s in pretraining_sentences(records)]
    return "\n".join(lines)


def variants_table(records: list[dict]) -> str:
    """Pre-trained / from scratch per variant at seed 0 (and the mean where more seeds ran)."""
    cols = [(ds, lv) for ds in DATASETS for lv in ("1", "2")
            if any(r["dataset"] == ds and r["level"] == lv and r.get("variant") not in (None, "unet")
                   for r in records)]

    def cell(variant: str, ds: str, lv: str) -> str:
        def seeds(init: str) -> dict:
            return {r["seed"]: r["dice"] for r in records if r["dataset"] == ds and r["level"] == lv
                    and r["method"] == f"btunet:{variant}:{init}"}
        bt, sc = seeds("bt"), seeds("scratch")
        if 0 not in bt or 0 not in sc:
            return "—"
        text = f"{bt[0]:.3f} / {sc[0]:.3f}"
        if bt[0] - sc[0] >= GAIN:
            text = f"**{bt[0]:.3f}** / {sc[0]:.3f}"
        if len(bt) > 1 and len(bt) == len(sc):
            text += f" ({len(bt)} seeds: {np.mean(list(bt.values())):.3f} / {np.mean(list(sc.values())):.3f})"
        return text
    header = ["variant"] + [f"{NAMES[ds]}, {images(lv)}" for ds, lv in cols]
    rows = [[f"`{v}`"] + [cell(v, ds, lv) for ds, lv in cols] for v in VARIANTS]
    rows = [r for r in rows if any(c != "—" for c in r[1:])]
    return "\n".join(["| " + " | ".join(header) + " |", "|---" + "|---:" * len(cols) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


# --------------------------------------------------------------------------------------- speed
def speed_block(r: dict, fused: list[dict] | None = None) -> str:
    """`unet` time per megapixel and the fast path's Dice cost, CLI overhead, peak memory, and the
    fused runtime's end-to-end speed from the latest ``fused.jsonl`` record."""
    lines = ["* **Speed** ([docs/results_speed.md](docs/results_speed.md)):"]
    if fused:
        inf = fused[-1]["inference"]
        after = inf["rows"][-1]
        lines.append(f"  * `btunet.predict` runs large CPU jobs in ONNX Runtime: {after['ms_per_mp']:.0f} ms per "
                     f"megapixel end to end on a {inf['size']}² image, {inf['speedup_vs_eager_fp32']:.1f}x faster "
                     f"than one eager fp32 forward of the whole image "
                     f"([docs/results_fused.md](docs/results_fused.md)).")
    unet = next((x for x in r.get("inference", []) if x["variant"] == "unet"), None)
    fv = r.get("fast_vs_fp32")
    if unet:
        text = (f"  * `unet` predicts 1 megapixel in about {unet['fast_ms_per_mp'] / 1e3:.1f} s on the CPU fast path "
                "(bf16)")
        if fv:
            text += f", with a Dice change of {abs(fv['dice_fp32'] - fv['dice_fast']):.4f} against fp32"
        lines.append(text + ".")
    c = r.get("cli")
    if c:
        o = c["overhead"]
        lines.append("  * `btunet predict` " + (
            f"adds no measurable overhead to the network time ({o:.2f}x)." if o < NOISE else
            f"takes {o:.2f}x the network time end to end."))
    m = r.get("memory")
    if m and len(m) >= 2:
        def peak(x):
            return x.get("vm_hwm_kb", x["ru_maxrss_kb"]) / 1024
        a, b = m[0], m[-1]
        verb = "stays flat" if peak(b) <= 1.10 * peak(a) else "grows"
        lines.append(f"  * Peak memory {verb} with stack length: {peak(a):.0f} → {peak(b):.0f} MB for "
                     f"{a['planes']} → {b['planes']} planes of {a['size']}².")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ command line
def cli_check_block(table: str) -> str:
    """The command-line check on BBBC007, from the per-image table `btunet evaluate` wrote."""
    rows = [line.split() for line in table.splitlines()[1:] if line.strip()]
    per_image = [r for r in rows if r[0] != "mean"]
    mean = next(float(r[1]) for r in rows if r[0] == "mean")
    trained = 2  # the protocol: fine-tune on the first two masks, evaluate on the rest
    return (f"On BBBC007 (pre-train on the {trained + len(per_image)} images, fine-tune on the first {trained} "
            f"masks, evaluate on the other {len(per_image)}) these commands with their defaults reach a mean "
            f"Dice of {mean:.3f}; see [docs/results.md](docs/results.md).")


# ------------------------------------------------------------------------------------- objects
OBJECT_METHODS = (("unet + borders, split as the model chose", "U-Net with borders, split as it chose"),
                  ("unet + distance watershed", "U-Net + distance watershed"),
                  ("random forest + distance watershed", "forest + distance watershed"))


#: name suffix of the objects benchmark's U-Net runs whose threshold was tuned on validation pixels
#: (the engine's default since thresholds.py); records without it kept 0.5
TUNED = ", threshold from validation"
#: The headline's U-Net rows are the runs of this fine-tune length (longer runs sit in the page)
OBJECTS_EPOCHS = 12


def objects_block(records: list[dict]) -> str:
    """Object F1 (and pixel Dice) per set: the U-Net's two ways to instances against the forest,
    from the runs with the size floor (records with ``min_size``) of ``OBJECTS_EPOCHS`` epochs."""
    inst = [r for r in records if r["part"] == "instances" and "min_size" in r
            and r.get("ft_epochs", OBJECTS_EPOCHS) == OBJECTS_EPOCHS]
    lines = [("* **Touching objects** (2 densely annotated images, object F1 at IoU 0.5 / pixel Dice on the "
              f"rest, mean over seeds, U-Net fine-tuned for {OBJECTS_EPOCHS} epochs, with the threshold chosen on "
              "validation pixels where those runs exist; "
              "[docs/results_objects.md](docs/results_objects.md)):")]
    for ds_name in DATASETS:
        parts = []
        for method, label in OBJECT_METHODS:
            # the runs with the engine's threshold (tuned on validation pixels) where there are any
            rs = ([r for r in inst if r.get("dataset", "bbbc007") == ds_name and r["method"] == method + TUNED]
                  or [r for r in inst if r.get("dataset", "bbbc007") == ds_name and r["method"] == method])
            if rs:
                parts.append(f"{label} {np.mean([r['object_f1'] for r in rs]):.3f} / "
                             f"{np.mean([r['dice'] for r in rs]):.3f} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
        if parts:
            lines.append(f"  * {NAMES[ds_name]}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- pre-training
#: the records' name for the encoder the package ships (``btunet info builtin``), and its start
BUILTIN_RECORD = ("bt600mild", "lr3")


def paired_diffs(records: list[dict], ds: str, encoder: str = BUILTIN_RECORD[0],
                 setting: str = BUILTIN_RECORD[1]) -> list[float]:
    """An encoder's runs (the built-in one's by default) minus from scratch, seed by seed, on the
    seeds both ran."""
    mine = {r["seed"]: r["dice"] for r in records if r["dataset"] == ds and r["encoder"] == encoder
            and r["setting"] == setting}
    base = {r["seed"]: r["dice"] for r in records if r["dataset"] == ds and r["encoder"] == "scratch"}
    return [mine[k] - base[k] for k in sorted(mine.keys() & base.keys())]


def pretraining_block(records: list[dict]) -> str:
    """What the built-in encoder buys at one annotated image, per fine-tune length, and how much
    room more masks leave a better start (all from the same-code records)."""
    lines = [("* **Pre-training** (`unet` from the built-in Barlow Twins encoder minus from scratch, one "
              "annotated image, paired seeds, mean test Dice; "
              "[docs/results_pretraining.md](docs/results_pretraining.md)):")]
    one = [r for r in records if r["part"] == "recipe" and r.get("images", 1) == 1]
    for epochs in sorted({r["ft_epochs"] for r in one}):
        rs = [r for r in one if r["ft_epochs"] == epochs]
        parts = [(NAMES[ds], paired_diffs(rs, ds)) for ds in DATASETS]
        parts = [(name, d) for name, d in parts if d]
        if not parts:
            continue
        counts = sorted({len(d) for _, d in parts})
        seeds = "/".join(map(str, counts))
        lines.append(f"  * {epochs} fine-tuning epochs ({seeds} seeds): "
                     + ", ".join(f"{name} {np.mean(d):+.3f}" for name, d in parts) + ".")
    full = [r for r in records if r["encoder"] == "scratch" and r.get("images", 1) > 2]
    if full:
        n, length = max((r["images"], r["ft_epochs"]) for r in full)
        room = []
        for ds in DATASETS:
            many = [r["dice"] for r in full if r["dataset"] == ds and (r["images"], r["ft_epochs"]) == (n, length)]
            single = [r["dice"] for r in one if r["dataset"] == ds and r["encoder"] == "scratch"
                      and r["ft_epochs"] == length]
            if many and single:
                room.append(f"{NAMES[ds]} {np.mean(many) - np.mean(single):+.3f}")
        lines.append(f"  * What {n} annotated images add over one, from scratch at {length} epochs (the most a "
                     f"better start could add, unless it beats more masks): {', '.join(room)}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- blocks
def generate(data: Path = DATA) -> dict[str, str]:
    """Every block's text, by marker name, from the records in ``data``."""
    blocks: dict[str, Callable[[], str]] = {
        "painting-loop": lambda: painting_loop_block(read_jsonl(data / "interactive.jsonl")),
        "quality": lambda: quality_block(quality_records(data)),
        "quality-variants": lambda: variants_table(quality_records(data)),
        "speed": lambda: speed_block(json.loads((data / "speed.json").read_text()),
                                     read_jsonl(data / "fused.jsonl")),
        "cli-check": lambda: cli_check_block((data / "bbbc007_cli_check.txt").read_text()),
        "objects": lambda: objects_block(read_jsonl(data / "objects.jsonl")),
        "pretraining": lambda: pretraining_block(read_jsonl(data / "pretraining_same_code.jsonl")),
        "robustness": lambda: robustness_block(read_jsonl(data / "robustness.jsonl")),
        "uncertainty": lambda: uncertainty_block(read_jsonl(data / "uncertainty.jsonl")),
    }
    return {name: make() for name, make in blocks.items()}


BLOCKS = ("painting-loop", "robustness", "quality", "quality-variants", "speed", "cli-check", "objects", "pretraining",
          "uncertainty")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def blocks_in(text: str) -> dict[str, str]:
    """The text between each pair of markers present in ``text`` (without the markers' indentation)."""
    found = {}
    for name in BLOCKS:
        start, end = markers(name)
        if start in text and end in text:
            head, rest = text.split(start, 1)
            indent = head[head.rfind("\n") + 1:]
            body = rest.split(end, 1)[0].rstrip(" ").strip("\n")
            found[name] = "\n".join(line[len(indent):] if line.startswith(indent) else line
                                    for line in body.split("\n"))
    return found


def fill(text: str, blocks: dict[str, str]) -> str:
    """``text`` with every marked block replaced by its generated text, at the start marker's indentation.

    A block can occur more than once: a notes block also sits in results_*.md and results.md.
    """
    for name, body in blocks.items():
        start, end = markers(name)
        out = []
        while start in text and end in text:
            head, rest = text.split(start, 1)
            indent = head[head.rfind("\n") + 1:]
            indent = indent if not indent.strip() else ""
            lines = "\n".join(indent + line if line else line for line in body.split("\n"))
            out.append(f"{head}{start}\n{lines}\n{indent}{end}")
            text = rest.split(end, 1)[1]
        text = "".join(out) + text
    return text


def update(root: Path = ROOT, data: Path | None = None) -> list[Path]:
    """Rewrite every generated block in the target files; returns the files that changed."""
    blocks = generate(data or root / "docs" / "data")
    changed = []
    for rel in TARGETS:
        path = root / rel
        if not path.exists():
            continue
        old = path.read_text()
        new = fill(old, blocks)
        if new != old:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(new)
            tmp.replace(path)
            changed.append(path)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="report blocks that differ from the records; write nothing")
    args = p.parse_args(argv)
    if args.check:
        blocks = generate()
        stale = [f"{rel}: {name}" for rel in TARGETS if (ROOT / rel).exists()
                 for name, body in blocks_in((ROOT / rel).read_text()).items() if body != blocks[name]]
        print("\n".join(stale) or "every block matches its records")
        return 1 if stale else 0
    for path in update():
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
