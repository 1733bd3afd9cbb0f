#!/usr/bin/env python3
"""The power-loss campaign's table (docs/POWERLOSS_CAMPAIGN.md) from the
summary.json of every run under a campaign directory:

    scripts/powerloss-table.py target/plcampaign

One row per workload, then the recovery after each kind of power loss.
"""
import json
import sys
from pathlib import Path


def load(root):
    runs = []
    for f in sorted(Path(root).glob("*/summary.json")):
        runs.append(json.loads(f.read_text()))
    return runs


def slowest(ms):
    """Slowest node of one heal, or None when a node never served."""
    vals = list(ms.values())
    if any(v is None for v in vals):
        return None
    return max(vals) if vals else 0.0


def fmt_ms(v):
    return "never" if v is None else f"{v:.0f} ms"


def worst(vals):
    vals = list(vals)
    if not vals:
        return None
    if any(v is None for v in vals):
        return None
    return max(vals)


def heal_kinds(run):
    """(single-node heals, whole-cluster heals): slowest node after each."""
    losses = run.get("power_losses", [])
    single, whole = [], []
    for w in run.get("window_recovery", []):
        before = [p for p in losses if p["at_s"] < w["healed_at_s"]]
        if not before:
            continue
        kind = whole if len(before[-1]["nodes"]) > 1 else single
        kind.append(slowest(w["recovery_ms"]))
    return single, whole


def main(root):
    runs = load(root)
    by = {}
    for r in runs:
        by.setdefault(r["workload"], []).append(r)
    print(
        "| workload | runs | checkers passed | ok / info / fail | power losses "
        "(one node / whole cluster) | bytes dropped (total, largest one loss) | "
        "torn writes | worst recovery after final heal | worst after a one-node "
        "loss | worst after a whole-cluster loss | majority side served | "
        "longest gap on majority side |"
    )
    print("|" + "---|" * 12)
    allsingle, allwhole = [], []
    for w in ["set", "register", "counter"]:
        rs = by.get(w, [])
        if not rs:
            continue
        passed = sum(1 for r in rs if r["valid"] is True)
        ok = sum(r["ok"] for r in rs)
        info = sum(r["info"] for r in rs)
        fail = sum(r["fail"] for r in rs)
        losses = [p for r in rs for p in r.get("power_losses", [])]
        one = sum(1 for p in losses if len(p["nodes"]) == 1)
        per_loss = [sum(d["bytes_dropped"] for d in p["dropped"]) for p in losses]
        torn = sum(
            1 for p in losses for d in p["dropped"] if d.get("torn") is not None
        )
        final = worst(v for r in rs for v in r["recovery_ms"].values())
        single, whole = [], []
        for r in rs:
            s, wh = heal_kinds(r)
            single += s
            whole += wh
        allsingle += single
        allwhole += whole
        served = [r["availability"] for r in rs if r.get("availability") is not None]
        gaps = []
        for r in rs:
            for res in r["results"]:
                if res["name"] == "availability":
                    gaps.append(res["details"].get("longest_gap_ms", 0.0))
        print(
            f"| {w} | {len(rs)} | {passed}/{len(rs)} | {ok} / {info} / {fail} | "
            f"{len(losses)} ({one} / {len(losses) - one}) | "
            f"{sum(per_loss)} B, {max(per_loss, default=0)} B | {torn} | "
            f"{fmt_ms(final)} | {fmt_ms(worst(single))} | {fmt_ms(worst(whole))} | "
            f"{min(served, default=1.0) * 100:.2f}% (lowest run) | "
            f"{max(gaps, default=0.0) / 1e3:.2f} s |"
        )
    print()
    zero = sum(
        1
        for r in runs
        for p in r.get("power_losses", [])
        if sum(d["bytes_dropped"] for d in p["dropped"]) == 0
    )
    total = sum(len(r.get("power_losses", [])) for r in runs)
    print(f"runs: {len(runs)}; power losses: {total}, {zero} of which dropped nothing")
    for name, heals in [("one-node", allsingle), ("whole-cluster", allwhole)]:
        ok = sorted(v for v in heals if v is not None)
        if not ok:
            continue
        over = sum(1 for v in heals if v is None or v > 3000)
        print(
            f"after a {name} loss: slowest node median {ok[len(ok) // 2]:.0f} ms, "
            f"p90 {ok[int(len(ok) * 0.9)]:.0f} ms, worst {fmt_ms(worst(heals))} "
            f"over {len(heals)} heals; {over} over 3 s"
        )
    for r in runs:
        if r["valid"] is not True:
            print(f"NOT PASSED: {r['dir']} ({r['valid']})")
            for res in r["results"]:
                if res["valid"] is not True:
                    print(f"  {res['name']}: {res['summary']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/plcampaign")
