"""Turn benchmarks/results/*.json into the tables of benchmarks/README.md (between the markers).

    python benchmarks/tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# exact peers (rank-safe on their own quantisation) that lsr's exact mode is compared with
EXACT_PEERS = {("pisa", "maxscore"), ("pisa", "block_max_maxscore"), ("pisa", "block_max_wand"),
               ("anserini", None), ("bmp", "alpha=1,beta=1"), ("scipy", "qdt"),
               ("splade-index", None)}
LSR_EXACT = "c-auto"


def _name(row: dict) -> str:
    params = row.get("params") or {}
    knobs = "".join(f" {key}={params[key]}" for key in ("query_cut", "heap_factor") if row["engine"] == "seismic"
                    and key in params)
    return f"{row['engine']}/{row['variant']}{knobs}"


def _fmt(x, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def _is_exact_peer(row: dict) -> bool:
    return any(row["engine"] == e and (v is None or str(row["variant"]).startswith(v)) for e, v in EXACT_PEERS)


def dataset_table(k10: dict, k1000: dict | None) -> list[str]:
    big = {_name(r): r for r in (k1000 or {}).get("rows", [])}
    lines = ["| engine / variant | R@10 float | R@10 own quant. | p50 ms | p99 ms | q/s (2 threads) | build s | "
             "index MiB | peak RSS MiB | p50 ms k=1000 | R@1000 float |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(k10["rows"], key=lambda r: (r["engine"], str(r["variant"]))):
        b = big.get(_name(r), {})
        size = None if r.get("index_bytes") is None else r["index_bytes"] / 2**20
        lines.append(
            f"| {_name(r)} | {_fmt(r['recall_float_ties'], '.4f')} | {_fmt(r['recall_quant_ties'], '.4f')} | "
            f"{_fmt(r['p50_ms'])} | {_fmt(r.get('p99_ms'))} | {_fmt(r['qps_threads'], '.0f')} | "
            f"{_fmt(r['build_s'], '.1f')} | {_fmt(size, '.1f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} | "
            f"{_fmt(b.get('p50_ms'))} | {_fmt(b.get('recall_float_ties'), '.4f')} |")
    return lines


def ratios(report: dict) -> list[str]:
    rows = report["rows"]
    lsr = next((r for r in rows if r["engine"] == "lsr" and r["variant"] == LSR_EXACT), None)
    if lsr is None:
        return []
    out = [f"Exact, k={report['k']}: lsr {LSR_EXACT} p50 {lsr['p50_ms']:.3f} ms; "
           "ratio lsr / peer (< 1: lsr faster):"]
    for r in rows:
        if _is_exact_peer(r) and r["p50_ms"]:
            out.append(f"- {_name(r)}: {lsr['p50_ms'] / r['p50_ms']:.2f}")
    approx = [r for r in rows if r["engine"] == "lsr" and (r["recall_float_ties"] or 0) >= 0.95]
    seismic = [r for r in rows if r["engine"] == "seismic" and (r["recall_float_ties"] or 0) >= 0.95]
    if approx and seismic:
        best = min(approx, key=lambda r: r["p50_ms"])
        peer = min(seismic, key=lambda r: r["p50_ms"])
        out.append(f"- approximate at R@{report['k']} ≥ 0.95: fastest lsr {_name(best)} {best['p50_ms']:.3f} ms "
                   f"(R {best['recall_float_ties']:.3f}) vs fastest Seismic {_name(peer)} {peer['p50_ms']:.3f} ms "
                   f"(R {peer['recall_float_ties']:.3f}): ratio {best['p50_ms'] / peer['p50_ms']:.2f}")
    floor = report["floor"]
    exhaustive = next((r for r in rows if r["engine"] == "lsr" and r["variant"] == "c-exhaustive"), None)
    line = (f"- exhaustive floor: {floor['postings_per_query']:.0f} postings/query × {floor['bytes_per_posting']} B "
            f"÷ {report['memory_bandwidth_gbs']:.1f} GB/s = {floor['floor_ms']:.3f} ms")
    if exhaustive:
        line += (f"; lsr c-exhaustive {exhaustive['p50_ms']:.3f} ms ({exhaustive['p50_ms'] / floor['floor_ms']:.1f}× "
                 f"the floor), lsr {LSR_EXACT} {lsr['p50_ms'] / floor['floor_ms']:.1f}×")
    out.append(line)
    return out


def machine_text(report: dict) -> str:
    """The machine of one dataset's run (the datasets may come from runs on different CPUs)."""
    m = report["machine"]
    if "flags" in m:  # recorded with the CPU features (scale.machine)
        from scale import machine_line

        head = machine_line(m).rstrip(".")
    else:  # older records name the features in the CPU string
        head = f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['platform']}"
    return f"{head}; single-core read bandwidth {report['memory_bandwidth_gbs']:.1f} GB/s. Date {report['date']}."


def render() -> str:
    reports = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*-k*.json"))}
    if not reports:
        return "(no results yet: run `python benchmarks/run.py`)"
    lines = []
    names = sorted({r["dataset"] for r in reports.values()}, key=lambda n: (n.startswith("enwiki"), n))
    for name in names:
        k10 = reports.get(f"{name}-k10")
        if k10 is None:
            continue
        f = k10["floor"]
        lines += [f"### {name}: {f['n_docs']:,} documents ({f['avg_doc_terms']:.0f} terms each), "
                  f"{f['n_queries']:,} queries ({f['avg_query_terms']:.1f} terms each)", "", machine_text(k10), ""]
        lines += dataset_table(k10, reports.get(f"{name}-k1000"))
        lines += [""] + ratios(k10)
        if f"{name}-k1000" in reports:
            lines += ratios(reports[f"{name}-k1000"])
        lines.append("")
    lines += load_table()
    return "\n".join(lines)


def load_table() -> list[str]:
    path = RESULTS / "load.json"
    if not path.exists():
        return []
    load = json.loads(path.read_text())
    lines = [f"### REST service under load: `lsr serve` ({load['workers']} gunicorn workers) on the SciFact index, "
             f"wrk on loopback, {load['duration_s']} s per row, `POST /v1/search` with the 300 SciFact test queries",
             "", f"Machine: {load.get('cpu', 'the one above')}, 2 cores, {load.get('date', '')}.", "", "| queries sent as | concurrent connections | requests/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|"]
    for mode, rows in load["modes"].items():
        for row in rows:
            lines.append(f"| {mode} | {row['connections']} | {row['requests_per_s']:.0f} | {row['p50_ms']:.2f} | "
                         f"{row['p99_ms']:.2f} | {row['errors']} |")
    lines.append("")
    for mode, rows in load["modes"].items():
        single = next((r for r in rows if r["connections"] == 1), None)
        eight = next((r for r in rows if r["connections"] == 8), None)
        best = max(r["requests_per_s"] for r in rows)
        alone = load["library_alone_qps"][mode]
        line = (f"- {mode}: library alone ({load['workers']} threads, one query per call) {alone:.0f} queries/s; the "
                f"server's best is {best / alone:.0%} of it")
        if single and eight:
            line += f"; p99 at 8 connections / p50 at 1 = {eight['p99_ms'] / single['p50_ms']:.1f}×"
        lines.append(line + ".")
    return lines + [""]


def write_readme() -> None:
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    write_readme()


def replace_section(readme: Path, name: str, body: str, heading: str = "") -> None:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` of ``readme``; where the markers are
    missing, append ``heading`` and the marked body at the end (every benchmark owns one such section)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text(encoding="utf-8")
    section = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + (heading + "\n\n" if heading else "") + section + "\n"
    readme.write_text(text, encoding="utf-8")
