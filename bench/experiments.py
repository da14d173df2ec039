"""Side-by-side experiments: each suite is a sweep definition, ``bench/sweeps/<suite>.toml``,
run through ``studies.sweep`` as ``fame sweep`` runs it; each finished run's config and metrics
-> bench/results/runs/<run name>.json, then RESULTS.md regenerated from those files (no
hand-typed numbers).

    python bench/experiments.py run --suite beauty-models      # resumable: finished runs are skipped
    python bench/experiments.py run --suite ml100k-init
    python bench/experiments.py report                         # only regenerate RESULTS.md

A suite is named variants × seeds (``[[variants]]``); ``[meta] run_name`` names each trial's
JSON file, ``[meta] paired`` lists the report's per-seed comparisons, ``[meta] targets`` the
targets it says are met or not, and ``description`` is the text of its section. A killed run
resumes from its last finished epoch (the trainer's checkpoint in the store), a run whose JSON
exists is not repeated, and a run whose train key (config, upstream keys, code version) equals a
finished run's reuses that record, so the script can be restarted until the suite is done and a
tuning run that matches a final configuration is not trained twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, git_rev, machine, peak_rss_mb  # noqa: E402

from studies.sweep import DONE, SweepSpec, grid_trials, load_sweep, run_sweep  # noqa: E402

RUNS = RESULTS / "runs"
REPO = Path(__file__).resolve().parents[1]
SWEEPS = Path(__file__).resolve().parent / "sweeps"
# every suite, in RESULTS.md's order; each is bench/sweeps/<suite>.toml
SUITES = (
    "beauty-models",
    "beauty-tuned",
    "beauty-final",
    "beauty-tuning",
    "ml100k-init",
    "beauty-text",
    "sports-text",
    "beauty-text-tuning",
    "beauty-text-gain",
    "sports-text-gain",
    "beauty-sampled",
    "beauty-pathway",
    "sports-pathway",
    "beauty-cold",
    "sports-cold",
)


@dataclass(frozen=True)
class Run:
    """One trial of a suite under its bench name (``runs/<name>.json``)."""

    name: str
    suite: str
    config: str
    overrides: dict[str, Any]  # on the config: the sweep's, the variant's, train.seed
    label: str  # the variant's label: its row in RESULTS.md
    trial: str  # the trial's name in the sweep (t000, ...)


def load_suite(suite: str, extra: dict[str, Any] | None = None) -> SweepSpec:
    """The suite's sweep definition; ``extra``: overrides that are no part of its runs' records
    (the artifact root)."""
    return load_sweep(SWEEPS / f"{suite}.toml", extra)


def suite_runs(spec: SweepSpec) -> list[Run]:
    """The suite's trials in sweep order (seed-major), named by ``[meta] run_name``."""
    template = spec.meta["run_name"]
    out = []
    for t in grid_trials(spec):
        variant = t.variant.name if t.variant else ""
        name = template.format(variant=variant, seed=t.params.get("train.seed"))
        label = t.variant.label if t.variant else name
        overrides = {**spec.overrides, **t.overrides}
        out.append(Run(name, spec.name, spec.config, overrides, label, t.name))
    return out


def run_one(run: Run, extra: dict[str, Any], threads: int | None) -> dict:
    """The run as its suite's sweep trial (``only``: this one), then its JSON record from the
    store: the trial's run, or the finished run the sweep reused for it."""
    from pipeline.config import load_config

    row = run_sweep(load_suite(run.suite, extra), threads=threads, only=[run.trial]).rows[0]
    if row["status"] not in DONE:
        raise SystemExit(f"{run.name} ({run.suite} {run.trial}) {row['status']}: {row['error']}")
    cfg = load_config(run.config, {**run.overrides, **extra})  # the trial's config
    return save_record(record_of(run, row["run_id"], cfg))


def record_of(run: Run, run_id: str, cfg: Any) -> dict:
    """What ``runs/<name>.json`` holds, read back from the store's records and artifacts."""
    from pipeline.registry import ORDER
    from pipeline.runner import plan_keys
    from storage import ArtifactStore, query

    store = ArtifactStore(cfg.artifacts_dir())
    done = [
        r
        for r in store.records("stages")
        if r["run_id"] == run_id and r["status"] in ("computed", "skipped")
    ]
    done.sort(key=lambda r: ORDER.index(r["stage"]))
    arts = {r["stage"]: store.get(r["stage"], r["key"]) for r in done}
    rec = next(r for r in store.records("runs") if r["run_id"] == run_id)
    train = arts["train"].manifest
    _, rows = query(
        store.root,
        f"""
        select split, protocol, metric || coalesce('@' || k, '') as name, value
        from metrics where artifact_key = '{arts["evaluate"].key}'""",
    )
    metrics: dict = {}
    for split, protocol, metric, value in rows:
        metrics.setdefault(protocol, {}).setdefault(split, {})[metric] = value
    facet_report = []
    if "pretrain" in arts and "facet_report" in arts["pretrain"].rows:  # init=text: none
        _, facet_report = query(
            store.root,
            f"""
            select facet, representation, accuracy, n_items from facet_report
            where artifact_key = '{arts["pretrain"].key}'""",
        )
    groups: dict = {}
    if "group_metrics" in arts["evaluate"].rows:  # evaluate artifacts before groups had none
        _, group_rows = query(
            store.root,
            f"""
            select protocol, split, grouping, "group", users, metric || '@' || k, value
            from group_metrics where artifact_key = '{arts["evaluate"].key}'
              and k = 10 order by grouping, group_order""",
        )
        for protocol, split, grouping, group, users, name, value in group_rows:
            cell = groups.setdefault(protocol, {}).setdefault(split, {})
            cell.setdefault(grouping, {}).setdefault(group, {"users": users})[name] = value
    keys = plan_keys(cfg)
    return {
        "name": run.name,
        "suite": run.suite,
        "variant": run.label,
        "config_name": run.config,
        "overrides": run.overrides,
        "config": cfg.model_dump(mode="json"),
        "run_id": run_id,
        "train_key": keys["train"],
        "keys": keys,
        "best_epoch": train["best_epoch"],
        "epochs_run": train["epochs_run"],
        "train_seconds": train["train_seconds"],
        "pipeline_wall_seconds": rec["ended_at"] - rec["started_at"],
        "stages": {
            r["stage"]: {"skipped": r["status"] == "skipped", "seconds": r["seconds"]} for r in done
        },
        # what each stage's artifact took to compute, also where this run found it cached
        "artifact_seconds": {s: a.manifest.get("compute_seconds") for s, a in arts.items()},
        "num_params": train.get("num_params"),
        "metrics": metrics,
        # metrics@10 per group of users: target popularity, history length, cold/warm target
        "groups": groups,
        "facet_report": [
            dict(zip(("facet", "representation", "accuracy", "n_items"), r, strict=True))
            for r in facet_report
        ],
        "peak_rss_mb": peak_rss_mb(),
        "git": git_rev(),
        "machine": machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def save_record(record: dict) -> dict:
    """Write ``runs/<name>.json`` atomically: a killed write leaves no half record behind."""
    RUNS.mkdir(parents=True, exist_ok=True)
    tmp = RUNS / f".{record['name']}.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(RUNS / f"{record['name']}.json")
    return record


def reuse_finished(run: Run) -> dict | None:
    """A finished run with the same train and evaluate keys (config, upstream keys and code
    version, all computed by the current code) stands for this one: its record is copied under
    the new name instead of training the same model again (also across artifact roots, unlike
    the sweep's own reuse of the store's runs). A variant that changes the evaluation alone
    (the same train key) is run: its train stage is then the store's cached one."""
    from pipeline.config import RunConfig, load_config
    from pipeline.runner import plan_keys

    def keys(cfg: RunConfig) -> tuple[str, str]:
        plan = plan_keys(cfg)
        return plan["train"], plan["evaluate"]

    key = keys(load_config(run.config, run.overrides))
    for r in load_runs():
        if keys(RunConfig.model_validate(r["config"], context={"quiet": True})) == key:
            record = {
                **r,
                "name": run.name,
                "suite": run.suite,
                "variant": run.label,
                "overrides": run.overrides,
            }
            record["reused_from"] = r.get("reused_from", r["name"])
            return save_record(record)
    return None


def load_runs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


# two-sided 5% critical values of Student's t by degrees of freedom
T_CRITICAL = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def paired(done: list[dict], label_of: dict, base: str, other: str) -> list[str]:
    """Per-seed differences other − base of test NDCG@10: the seeds share the data order, so the
    paired difference is less noisy than the two means."""
    by = {(label_of[r["name"]], r["config"]["train"]["seed"]): r for r in done}
    seeds = sorted(s for v, s in by if v == base and (other, s) in by)
    if not seeds:
        return []
    out = [
        f"Paired by seed, test NDCG@10, {other} − {base}:",
        "",
        "| protocol | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean ± std | paired t | wins |",
        "|---|" + "---:|" * (len(seeds) + 3),
    ]
    for protocol in ("exclude_history", "keep_history"):
        d = [
            by[(other, s)]["metrics"][protocol]["test"]["ndcg@10"]
            - by[(base, s)]["metrics"][protocol]["test"]["ndcg@10"]
            for s in seeds
        ]
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        spread = f" ± {sd:.4f}" if len(d) > 1 else ""
        t = f"{statistics.mean(d) / (sd / len(d) ** 0.5):.1f}" if sd > 0 else "–"
        out.append(
            f"| `{protocol}` | "
            + " | ".join(f"{x:+.4f}" for x in d)
            + f" | {statistics.mean(d):+.4f}{spread} | {t} | {sum(x > 0 for x in d)}/{len(d)} |"
        )
    df = len(seeds) - 1
    critical = f"|t| > {T_CRITICAL[df]} is p < 0.05, two-sided" if df in T_CRITICAL else "–"
    return out + [
        "",
        f"`paired t` = mean / (std / √n) with n − 1 = {df} degrees of freedom ({critical}).",
        "",
    ]


def report(path: Path = REPO / "RESULTS.md") -> Path:
    runs = load_runs()
    out = [
        "# Results",
        "",
        "Generated by `python bench/experiments.py report` from `bench/results/runs/*.json`; do not edit.",
        "Full ranking over all items, chronological leave-one-out, test split at the best validation",
        "epoch, pessimistic ties. Mean ± sample std over seeds (n = number of seeds finished).",
        "Settings are chosen on the validation column only; test is read at the best validation epoch.",
        "`train s/run` is the training stage's wall time: runs often shared the 2 cores with other",
        "runs (one torch thread each), so it is no speed figure; `bench/train_speed.py` measures speed.",
        "",
    ]
    for suite in SUITES:
        spec = load_suite(suite)
        planned = suite_runs(spec)
        label_of = {r.name: r.label for r in planned}  # the suite's current label of each run
        done = [r for r in runs if r["name"] in label_of]
        variants = list(dict.fromkeys(label_of.values()))
        finished = {r["name"] for r in done}
        missing = [r.name for r in planned if r.name not in finished]
        out += [f"## {suite} ({spec.config})", "", spec.description, ""]
        for protocol in ("exclude_history", "keep_history"):
            label = (
                "history items excluded from candidates (S3-Rec/ICLRec protocol, default)"
                if protocol == "exclude_history"
                else "history items kept (RecBole `repeatable`)"
            )
            out += [
                f"Protocol `{protocol}`: {label}.",
                "",
                "| variant | n | valid NDCG@10 | HR@10 | HR@20 | NDCG@10 | NDCG@20 | MRR | best epoch | epochs run | train s/run |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for v in variants:
                rs = [r for r in done if label_of[r["name"]] == v]
                if not rs:
                    out.append(f"| {v} | 0 |" + " – |" * 9)
                    continue
                test = [r["metrics"][protocol]["test"] for r in rs]
                cells = [
                    _fmt([t[m] for t in test])
                    for m in ("hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr")
                ]
                valid = _fmt([r["metrics"][protocol]["valid"]["ndcg@10"] for r in rs])
                out.append(
                    f"| {v} | {len(rs)} | {valid} | "
                    + " | ".join(cells)
                    + f" | {statistics.mean(r['best_epoch'] for r in rs):.0f}"
                    + f" | {statistics.mean(r['epochs_run'] for r in rs):.0f}"
                    + f" | {statistics.mean(r['train_seconds'] for r in rs):.0f} |"
                )
            out.append("")
        for base, other in spec.meta.get("paired", []):
            out += paired(done, label_of, base, other)
        out += targets_section(done, label_of, spec.meta.get("targets", []))
        out += groups_section(done, label_of, variants, spec.meta.get("groups", []))
        out += facet_section(done) + stage_times(done)
        if missing:
            out += [
                f"Runs not finished yet: {', '.join(missing)} (resume with "
                f"`python bench/experiments.py run --suite {suite}`).",
                "",
            ]
        if done:
            m = done[0]["machine"]
            out += [
                f"Machine: {m.get('cpus')} CPUs, torch {m.get('torch')}, cuda={m.get('cuda')}.",
                "",
            ]
    out += bench_section()
    path.write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote {path}")
    return path


def groups_section(
    done: list[dict], label_of: dict, variants: list[str], groupings: list[str]
) -> list[str]:
    """Test NDCG@10 (``exclude_history``) per group of users, mean over seeds, for each of the
    suite's ``[meta] groups``; records written before grouped metrics existed have none."""
    from pipeline.stages.evaluate import GROUPING_TITLES

    out = []
    for grouping in groupings:
        cells: dict[str, dict[str, list[float]]] = {}
        users: dict[str, int] = {}
        for r in done:
            groups = r.get("groups", {}).get("exclude_history", {}).get("test", {}).get(grouping)
            for g, row in (groups or {}).items():
                cells.setdefault(label_of[r["name"]], {}).setdefault(g, []).append(row["ndcg@10"])
                users[g] = row["users"]
        if not cells:
            continue
        names = list(users)
        out += [
            f"Test NDCG@10 (`exclude_history`) by {GROUPING_TITLES.get(grouping, grouping)}, "
            "mean over seeds (users per group in the header):",
            "",
            "| variant | n | " + " | ".join(f"{g} ({users[g]:,})" for g in names) + " |",
            "|---|---:|" + "---:|" * len(names),
        ]
        for v in variants:
            if v in cells:
                n = max(len(x) for x in cells[v].values())
                row = [
                    f"{statistics.mean(cells[v][g]):.4f}" if g in cells[v] else "–" for g in names
                ]
                out.append(f"| {v} | {n} | " + " | ".join(row) + " |")
        out.append("")
    return out


def targets_section(done: list[dict], label_of: dict, targets: list[dict]) -> list[str]:
    """Each ``[meta] targets`` entry checked on the mean test NDCG@10 under the default protocol:
    ``over`` + ``gain`` (relative to another variant's mean) or ``at_least`` (a published figure,
    named by ``source``). Said as met or not from the records, so the verdict cannot go stale."""

    def value_of(r: dict, group: list[str] | None) -> float | None:
        if not group:
            return r["metrics"]["exclude_history"]["test"]["ndcg@10"]
        groups = r.get("groups", {}).get("exclude_history", {}).get("test", {})
        cell = groups.get(group[0], {}).get(group[1])
        return None if cell is None else cell["ndcg@10"]

    def mean(label: str, group: list[str] | None = None) -> tuple[float, int] | None:
        xs = [value_of(r, group) for r in done if label_of[r["name"]] == label]
        xs = [x for x in xs if x is not None]
        return (statistics.mean(xs), len(xs)) if xs else None

    lines = []
    for t in targets:
        group = t.get("group")  # [grouping, group]: the target on that group's users only
        got = mean(t["variant"], group)
        if got is None:
            continue
        value, n = got
        on = f" on {group[1]} targets" if group else ""
        if "over" in t and "ratio" in t:
            base = mean(t["over"], group)
            if base is None:
                continue
            ratio = value / base[0] if base[0] > 0 else float("inf")
            met = ratio >= t["ratio"]
            what = (
                f"{t['variant']}{on} {value:.4f} vs {t['over']} {base[0]:.4f}: {ratio:.2f}× "
                f"(target ≥ {t['ratio']}×)"
            )
        elif "over" in t:
            base = mean(t["over"], group)
            if base is None:
                continue
            if base[0] > 0:
                rel = value / base[0] - 1
                met, shown = rel >= t["gain"], f"{rel:+.1%}"
            else:  # a zero base has no relative gain: any positive value is above it
                met, shown = value > 0 or t["gain"] < 0, f"{value - base[0]:+.4f}"
            what = (
                f"{t['variant']}{on} {value:.4f} vs {t['over']} {base[0]:.4f}: {shown} "
                f"(target ≥ +{t['gain']:.0%})"
            )
        else:
            met = value >= t["at_least"]
            what = (
                f"{t['variant']} {value:.4f} vs {t['source']} {t['at_least']:.4f}: "
                f"{value - t['at_least']:+.4f} (target: at or above)"
            )
        lines.append(f"- {what}, n = {n}: **{'met' if met else 'not met'}**")
    if not lines:
        return []
    return ["Targets on mean test NDCG@10, `exclude_history`:", "", *lines, ""]


def facet_section(done: list[dict]) -> list[str]:
    """The pre-training check (§6.8) of the suite's first run that has one: per facet, kNN label
    accuracy of its own slice, the other slices, the raw text vector and a random projection."""
    rec = next((r for r in done if r.get("facet_report")), None)
    if rec is None:
        return []
    rows = rec["facet_report"]
    facets = list(dict.fromkeys(r["facet"] for r in rows))
    acc = {(r["facet"], r["representation"]): r["accuracy"] for r in rows}
    n = {r["facet"]: r["n_items"] for r in rows}
    out = [
        f"`facet_report` (pre-training of `{rec['name']}`): leave-one-out {10}-NN accuracy of "
        "each facet's labels, among the items that have one.",
        "",
        "| facet | items | own slice | best other slice | raw text (384-d) | random projection |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in facets:
        others = [(acc[(f, f"slice:{g}")], g) for g in facets if g != f]
        best, by = max(others)
        out.append(
            f"| {f} | {n[f]} | **{acc[(f, f'slice:{f}')]:.3f}** | {best:.3f} ({by}) | "
            f"{acc[(f, 'text')]:.3f} | {acc[(f, 'random')]:.3f} |"
        )
    return out + [""]


def stage_times(done: list[dict]) -> list[str]:
    """Wall time of the encode and pretrain stages where a run of the suite computed them."""
    seen = {}
    for r in done:
        for stage in ("encode", "pretrain"):
            sec = r.get("artifact_seconds", {}).get(stage)
            if sec is not None and stage not in seen and not r.get("reused_from"):
                seen[stage] = (sec, r["name"])
    if not seen:
        return []
    parts = [f"{s} {sec:.0f} s (artifact of `{name}`)" for s, (sec, name) in seen.items()]
    return ["Stage wall times, computed once and cached for the other runs: " + ", ".join(parts)
            + ".", ""]  # fmt: skip


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def bench_section() -> list[str]:
    """Speed and memory figures from the other bench scripts' JSON files."""
    out = [
        "## Benchmarks",
        "",
        "Each line comes from a JSON file under `bench/results/` (command and git revision inside).",
        "",
    ]
    if d := _load("ingest.json"):
        for name, r in d["results"].items():
            out.append(
                f"- ingest {name}: {r['seconds']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
                f"(`{d['command']}`, {d['git']})"
            )
    if d := _load("train_speed.json"):
        for name, r in d["results"].items():
            out.append(
                f"- {name} on Beauty: epoch {r['epoch_seconds']:.1f} s ({r['train_sequences_per_s']:.0f} "
                f"sequences/s, logits {r['achieved_gflops']:.1f} GFLOP/s vs plain matmul "
                f"{r['matmul_gflops']:.1f} GFLOP/s), full-ranking evaluation of {r['eval_users_per_s']:.0f} "
                f"users/s ({r['eval_seconds']:.2f} s for all users), peak RSS {r['peak_rss_mb']:.0f} MB"
            )
        if d.get("fame_over_sasrec_epoch"):
            out.append(
                f"- FAME / SASRec epoch time: {d['fame_over_sasrec_epoch']:.2f}x (`{d['command']}`, {d['git']})"
            )
    if d := _load("encode_speed.json"):
        out.append(
            f"- encode ({d['encoder']}, {d['items']} ml-100k items): {d['items_per_second']:.0f} items/s "
            f"including model load; cached rerun {d['cache_seconds']:.2f} s = "
            f"{100 * d['cache_ratio']:.1f}% of the first (`{d['command']}`, {d['git']})"
        )
    if d := _load("amazon2023.json"):
        r = d["read"]
        out.append(
            f"- Amazon Reviews 2023 reader (synthetic category in the 2023 schema): "
            f"{r['reviews']:,} reviews ({r['reviews_file_mb']:.0f} MB JSONL) in "
            f"{r['reviews_seconds']:.1f} s, {r['items']:,} items' metadata in "
            f"{r['meta_seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB; encode "
            + ", ".join(
                f"{name} {e['texts_per_second']:.0f} texts/s ({e['mean_tokens']:.0f} tokens, "
                f"{e['truncated']} of {e['texts']} cut)"
                for name, e in d["encode"].items()
            )
            + f" (`{d['command']}`, {d['git']})"
        )
    if d := _load("flow_overhead.json"):
        out.append(
            f"- Prefect flow with all {d['stages']} stages cached: {d['cached_flow_seconds']:.2f} s "
            f"({d['per_stage_overhead_seconds']:.2f} s per stage; plain runner "
            f"{d['plain_runner_cached_seconds']:.2f} s) (`{d['command']}`, {d['git']})"
        )
    for path in sorted(RESULTS.glob("pretrain_sweep_*.json")):
        d = json.loads(path.read_text())
        out += [
            "",
            f"Facet pre-training settings on `{d['config']}` (`{d['command']}`, {d['git']}): kNN "
            "label accuracy of each facet from its own slice, the raw text vector and the best "
            "other slice (mean over the facets "
            f"{', '.join(d['facets'])}), and `text recall@10`: how often an item's nearest text "
            "neighbour is among its 10 nearest rows of the initial table. `seconds`: wall time "
            "of pre-training, measured at low priority beside a training run.",
            "",
            "| setting | own slice | raw text | best other slice | text recall@10 | seconds |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in d["rows"]:
            if "own" not in r:
                out.append(f"| {r['setting']} | – | – | – | {r['text_recall@10']:.3f} | – |")
                continue
            own, text, other = (
                statistics.mean(r[k].values()) for k in ("own", "text", "best_other")
            )
            out.append(
                f"| {r['setting']} | {own:.3f} | {text:.3f} | {other:.3f} | "
                f"{r['text_recall@10']:.3f} | {r['pretrain_seconds']:.0f} |"
            )
    out += cold_ranks_section()
    out += cold_calibration_section()
    out += scale_section()
    m = (_load("train_speed.json") or _load("ingest.json") or {}).get("machine", {})
    if m:
        out += [
            "",
            f"Machine: {m.get('cpus')} CPUs, torch {m.get('torch')} ({m.get('torch_threads')} threads), "
            f"{m.get('platform')}.",
        ]
    return out + [""]


def cold_ranks_section() -> list[str]:
    """bench/cold_ranks.py: where the cold targets rank, and the offset trade-off."""
    d = _load("cold_ranks.json")
    if not d:
        return []
    runs = d["runs"].values()
    offsets = [r["offset_sd"] for r in next(iter(runs))["offset_tradeoff"]]
    out = [
        "",
        f"Cold targets of the beauty-cold runs, scored again (`{d['command']}`, {d['git']}; "
        "test, `exclude_history`, the users whose target was held out of training): NDCG@10 "
        "against the whole catalogue (the records' figure), recall@100, the target's median "
        "rank, and its NDCG@10 among the held-out items alone (how well the text part orders "
        "the items it alone embeds).",
        "",
        "| variant | cold users | NDCG@10 | recall@100 | median rank | NDCG@10 among cold items |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        out.append(
            f"| {r['variant']} | {r['cold_users']:,} | {r['ndcg@10']:.4f} | "
            f"{r['recall@100']:.4f} | {r['median_rank']:.0f} | {r['ndcg@10_among_cold']:.4f} |"
        )
    out += [
        "",
        "The same runs with every cold item's score raised by b times the score's standard "
        "deviation over the catalogue (nothing chosen: b = 0 is what the runs report): test "
        "NDCG@10 on cold / warm targets.",
        "",
        "| variant | " + " | ".join(f"b = {b:g}" for b in offsets) + " |",
        "|---|" + "---:|" * len(offsets),
    ]
    for r in runs:
        cells = [f"{t['cold']:.4f} / {t['warm']:.4f}" for t in r["offset_tradeoff"]]
        out.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return out


def cold_calibration_section() -> list[str]:
    """bench/cold_calibration.py: the text-only items' scores widened by γ and offset by b."""
    d = _load("cold_calibration.json")
    if not d:
        return []
    out = [
        "",
        f"Text-only items calibrated after training (`{d['command']}`, {d['git']}; "
        f"{d['args']['users']:,} sampled test users, `exclude_history`): each held-out item's "
        "text part times γ and its score plus b, a grid fixed in advance. NDCG@10 on cold / "
        "warm targets / all, and per user the mean cold score minus the mean warm score and "
        "the two scores' standard deviations (cold / warm).",
        "",
        "| variant | γ | b | cold | warm | all | mean gap | sd cold / warm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in d["runs"].values():
        for g in r["grid"]:
            out.append(
                f"| {r['variant']} | {g['gamma']:g} | {g['offset']:g} | {g['cold']:.4f} | "
                f"{g['warm']:.4f} | {g['all']:.4f} | {g['mean_gap']:+.2f} | "
                f"{g['sd_cold']:.2f} / {g['sd_warm']:.2f} |"
            )
    return out


SCALE_STAGES = ("ingest", "encode", "pretrain", "train", "evaluate")


def scale_section() -> list[str]:
    """bench/scale.py: seconds (peak RSS) per stage and size, and the growth exponents."""
    d = _load("scale.json")
    if not d:
        return []
    sizes = sorted(d["results"], key=int)
    out = [
        "",
        f"Scale on synthetic ML-20m-shaped data (`{d['config']}`, 26,744 items, one epoch; "
        f"`{d['command']}`, {d['git']}): stage seconds (peak RSS of its process, MB). `epoch` is "
        "the training pass of the train stage, `valid` its one validation (full ranking of every "
        "user); `pipeline` sums the five stages. Encode depends on the items alone (the same at "
        "every size): the first size encodes them, the later ones are served by the text cache "
        "(no growth exponent).",
        "",
        "| interactions | users | " + " | ".join(SCALE_STAGES) + " | epoch | valid | pipeline |",
        "|---:|---:|" + "---:|" * (len(SCALE_STAGES) + 3),
    ]
    for n in sizes:
        row = d["results"][n]
        cells = [
            f"{row[s]['stage_seconds']:.0f} ({row[s]['peak_rss_mb']:.0f})" if s in row else "–"
            for s in SCALE_STAGES
        ]
        train = row.get("train", {})
        epoch = train.get("epoch_train_seconds")
        valid = train.get("epoch_valid_seconds")
        total = sum(row[s]["stage_seconds"] for s in SCALE_STAGES if s in row)
        out.append(
            f"| {int(n):,} | {row['users']:,} | " + " | ".join(cells) + " | "
            f"{epoch:.0f} | {valid:.0f} | {total:.0f} |"
            if epoch is not None
            else f"| {int(n):,} | {row['users']:,} | "
            + " | ".join(cells)
            + f" | – | – | {total:.0f} |"
        )
    growth = {k: v for k, v in d.get("growth_exponent", {}).items() if v is not None}
    if growth:
        out += [
            "",
            "Growth exponent of seconds vs interactions (least squares over the sizes): "
            + ", ".join(f"{k} {v:.2f}" for k, v in growth.items())
            + ".",
        ]
    return out + malloc_section(d)


def malloc_section(default: dict) -> list[str]:
    """The train stage measured again under other allocator settings (``scale-malloc.json``),
    beside the default rows of ``scale.json``."""
    d = _load("scale-malloc.json")
    if not d:
        return []
    env = " ".join(f"{k}={v}" for k, v in d["env"].items())
    out = [
        "",
        f"The train stage under `{env}` (`{d['command']}`, {d['git']}) against the default "
        "allocator above: peak RSS MB, epoch seconds, and the epoch's loss (the same model).",
        "",
        "| interactions | RSS default | RSS | epoch default | epoch | loss default | loss |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted(d["results"], key=int):
        a, b = default["results"].get(n, {}).get("train"), d["results"][n].get("train")
        if a and b:
            out.append(
                f"| {int(n):,} | {a['peak_rss_mb']:.0f} | {b['peak_rss_mb']:.0f} | "
                f"{a['epoch_train_seconds']:.0f} | {b['epoch_train_seconds']:.0f} | "
                f"{a['loss']:.4f} | {b['loss']:.4f} |"
            )
    return out


def run_suites(suites: list[str], only: set[str], artifacts: str | None, threads: int) -> None:
    """The suites' runs seed by seed (every suite's seed 1 first), each missing one reused from
    a finished record or run as its sweep trial; RESULTS.md regenerated after each."""
    extra = {"paths.artifacts": artifacts} if artifacts else {}
    queue = [run for suite in suites for run in suite_runs(load_suite(suite))]
    queue.sort(key=lambda r: r.overrides.get("train.seed", 0))  # stable: suite order per seed
    for run in queue:
        if (only and run.name not in only) or (RUNS / f"{run.name}.json").is_file():
            continue
        print(f"== {run.name}", flush=True)
        rec = reuse_finished(run)
        if rec is not None:
            print(f"   same train key as {rec['reused_from']}: reused", flush=True)
        else:
            rec = run_one(run, extra, threads or None)
        print(
            f"   test ndcg@10 {rec['metrics']['exclude_history']['test']['ndcg@10']:.4f} "
            f"best epoch {rec['best_epoch']} in {rec['train_seconds']:.0f}s",
            flush=True,
        )
        report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument(
        "--suite",
        choices=sorted(SUITES),
        required=True,
        action="append",
        help="repeatable: several suites run seed by seed (every suite's seed 1 first)",
    )
    run.add_argument("--only", default="", help="comma-separated run names")
    run.add_argument(
        "--artifacts", default=None, help="artifact root (default: config / ./artifacts)"
    )
    run.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    sub.add_parser("report")
    args = parser.parse_args()
    if args.cmd == "run":
        # a trial runs without progress bars: its stages and epochs are log lines
        logging.basicConfig(level=logging.INFO, format="   %(message)s")
        only = set(filter(None, args.only.split(",")))
        run_suites(args.suite, only, args.artifacts, args.threads)
    report()


if __name__ == "__main__":
    main()
