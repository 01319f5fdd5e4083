"""One verdict from a thief-suite result: protected, partly protected or not protected.

The verdict rests on the *worst* thief (the highest ranking power on clean test patients), at the
final epoch and at the epoch the thief picks on its clean validation split, because a data steward
cannot choose which thief steals the data.

* **protected**: every thief's ranking power, final and val-selected, is at most
  :data:`PROTECTED_MAX_RANK_POWER`;
* **partly protected**: otherwise, if every thief keeps at most :data:`PARTLY_MAX_MARGIN_KEPT` of
  the ranking margin above chance (``rank power - 0.5``) it has on clean data;
* **not protected**: otherwise.
"""

from __future__ import annotations

PROTECTED_MAX_RANK_POWER = 0.60
PARTLY_MAX_MARGIN_KEPT = 0.5
VERDICTS = ("protected", "partly protected", "not protected")


def decide(per_thief: dict[str, dict]) -> dict:
    """``per_thief``: ``{name: {"protected": {"final": rp, "val_selected": rp}, "clean": {... or None}}}``.

    Returns ``{"verdict", "worst_thief", "rank_power_final", "rank_power_val_selected", "clean_rank_power",
    "margin_kept", "thresholds"}``.
    """
    if not per_thief:
        raise ValueError("no thief results to judge")
    worst_name, worst = max(per_thief.items(), key=lambda kv: max(kv[1]["protected"].values()))
    worst_rp = max(v for t in per_thief.values() for v in t["protected"].values())
    kept = []
    for t in per_thief.values():
        clean = t.get("clean")
        if clean:
            margin = max(clean.values()) - 0.5
            kept.append((max(t["protected"].values()) - 0.5) / margin if margin > 1e-6 else 1.0)
    margin_kept = max(kept) if kept else None
    if worst_rp <= PROTECTED_MAX_RANK_POWER:
        verdict = "protected"
    elif margin_kept is not None and margin_kept <= PARTLY_MAX_MARGIN_KEPT:
        verdict = "partly protected"
    else:
        verdict = "not protected"
    clean = worst.get("clean") or {}
    return {
        "verdict": verdict, "worst_thief": worst_name,
        "rank_power_final": worst["protected"]["final"], "rank_power_val_selected": worst["protected"]["val_selected"],
        "clean_rank_power": max(clean.values()) if clean else None, "margin_kept": margin_kept,
        "thresholds": {"protected_max_rank_power": PROTECTED_MAX_RANK_POWER, "partly_max_margin_kept": PARTLY_MAX_MARGIN_KEPT},
    }


def verdict_line(v: dict) -> str:
    """The one line the ``evaluate`` command ends with."""
    clean = "" if v["clean_rank_power"] is None else f" (clean data: {v['clean_rank_power']:.3f})"
    kept = "" if v["margin_kept"] is None else f"; the thieves keep at most {100 * v['margin_kept']:.0f} % of their clean margin above chance"
    return (f"Verdict: {v['verdict']}: worst thief {v['worst_thief']}, ranking power max(AUC, 1-AUC) "
            f"{v['rank_power_final']:.3f} final / {v['rank_power_val_selected']:.3f} at its val-selected epoch{clean}{kept}. "
            f"Thresholds: protected if every thief's ranking power is <= {PROTECTED_MAX_RANK_POWER:.2f} (final and val-selected); "
            f"partly protected if every thief keeps <= {100 * PARTLY_MAX_MARGIN_KEPT:.0f} % of its clean margin; otherwise not protected.")
