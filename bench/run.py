#!/usr/bin/env python3
"""bench/run.py - runs the benchmark programs and reports (called by bench/run.sh).

Standard library only.  Runs every (workload, allocator) pair REPS times,
interleaved (rep 1 of everything, then rep 2, ...) so that a disturbance of
the machine spreads over all allocators; keeps the median of each figure;
writes bench/results/latest.csv and latest.md, prints the tables and the
targets, and draws docs/bench.svg.
"""
import argparse
import csv
import datetime
import html
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# ---- allocators ------------------------------------------------------------

# name, short label, kind; kind decides the command (see command()).
ALLOCATORS = [
    ("winheap-heap", "wh-heap", "wh:heap"),
    ("winheap-private", "wh-private", "wh:private"),
    ("winheap-shim", "wh-shim", "preload:shim"),
    ("mimalloc", "mimalloc", "preload:libmimalloc.so.2"),
    ("jemalloc", "jemalloc", "preload:libjemalloc.so.2"),
    ("tcmalloc", "tcmalloc", "preload:libtcmalloc_minimal.so.4"),
    ("glibc", "glibc", "plain"),
    ("mimalloc-heap", "mi-heap", "miheap"),
    ("syscall-floor", "floor", "wh:floor"),
]
WINHEAP = ["winheap-heap", "winheap-private", "winheap-shim"]
MAIN = ["winheap-heap", "winheap-private", "winheap-shim", "mimalloc", "jemalloc", "tcmalloc", "glibc"]
LIBCHECK = {"winheap-shim": "winheap", "mimalloc": "mimalloc", "jemalloc": "jemalloc", "tcmalloc": "tcmalloc"}

# ---- workloads -------------------------------------------------------------

# name, allocators, one-line description
WORKLOADS = [
    ("pairs", MAIN, "20M immediate alloc+free pairs, sizes 16..256"),
    ("batch", MAIN, "60 x (allocate 100k blocks of 16..128, then free them all)"),
    ("workingset", MAIN, "50k live slots of skewed sizes (half 9..16 B, 94% <= 256 B, up to 16 KiB); 10M random replacements"),
    ("larson", MAIN, "2 threads, 2 halves of 8192 slots swapped every round (each frees what the other allocated); 400 rounds, 8..1000 B"),
    ("prodcons", MAIN, "a producer thread allocates 5M blocks of 16..256, a consumer thread frees them (every free cross-thread)"),
    ("threads", MAIN, "1000 pairs of short threads, each allocating 512 blocks and leaving 256 live, freed by the main thread"),
    ("realloc", MAIN, "4 string builders growing by 1..32-byte appends to 64 B..64 KiB (log-uniform); 6M reallocs"),
    ("large", MAIN, "240 allocate/reallocate/free steps of 1..32 MiB blocks (4 live slots), every page touched"),
    ("destroy", MAIN + ["mimalloc-heap"], "fill a heap with 1M blocks of 16..64 B, then tear it down (HeapDestroy / mi_heap_destroy / free each)"),
    ("destroy-free", ["winheap-private", "mimalloc-heap"], "as destroy, but free every block, then destroy the empty heap"),
    ("create", ["winheap-private", "syscall-floor", "mimalloc-heap"], "20k empty HeapCreate+HeapDestroy (floor: the same syscalls + 1 page fault, made directly)"),
    ("scale", MAIN, "independent work (4096 live slots, 16M skewed replacements per thread) on 1 thread, then 2 threads"),
    ("footprint16", MAIN, "RSS growth over 1M live 16-byte blocks"),
    ("footprint64", MAIN, "RSS growth over 1M live 64-byte blocks"),
]
WL_DESC = {w: d for w, _, d in WORKLOADS}
# every workload of small blocks (all but large and create); realloc's strings grow to 64 KiB
SMALL = ["pairs", "batch", "workingset", "larson", "prodcons", "threads", "realloc", "destroy", "scale",
         "footprint16", "footprint64"]
CROSS = ["larson", "prodcons", "threads"]
NUMERIC = re.compile(r"^-?[0-9.]+(e[-+]?[0-9]+)?$")


def find_lib(soname):
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.strip().startswith(soname + " "):
                return line.split("=>")[-1].strip()
    except OSError:
        pass
    return None


def setup_allocators(root):
    """name -> (argv prefix, env) for the allocators that can run; notes for the rest."""
    bb = os.path.join(root, "bench", "build")
    avail, notes = {}, []
    for name, _, kind in ALLOCATORS:
        if kind.startswith("wh:"):
            avail[name] = ([os.path.join(bb, "wh_bench")], "api=" + kind[3:], {})
        elif kind == "plain":
            avail[name] = ([os.path.join(bb, "wh_bench_malloc")], "api=malloc", {})
        elif kind == "miheap":
            p = os.path.join(bb, "mi_heap_bench")
            if os.path.exists(p):
                avail[name] = ([p], None, {})
            else:
                notes.append(f"{name}: skipped (libmimalloc-dev not installed, bench/build/mi_heap_bench not built)")
        elif kind == "preload:shim":
            lib = os.path.join(root, "build", "libwinheap-malloc.so")
            if os.path.exists(lib):
                avail[name] = ([os.path.join(bb, "wh_bench_malloc")], "api=malloc", {"LD_PRELOAD": lib})
            else:
                notes.append(f"{name}: skipped (build/libwinheap-malloc.so is not built)")
        else:
            soname = kind.split(":", 1)[1]
            lib = find_lib(soname)
            if lib:
                avail[name] = ([os.path.join(bb, "wh_bench_malloc")], "api=malloc", {"LD_PRELOAD": lib})
            else:
                notes.append(f"{name}: skipped ({soname} not installed; bench/deps.sh installs it)")
    return avail, notes


def command(avail, alloc, workload, scale):
    prog, api, env = avail[alloc]
    wl, extra = workload, []
    if workload == "destroy-free":
        wl, extra = "destroy", ["teardown=free"]
    argv = prog + [wl] + ([api] if api else []) + extra + [f"scale={scale}"]
    e = dict(os.environ)
    e.pop("LD_PRELOAD", None)
    e.update(env)
    return argv, e


def parse_line(out):
    for line in reversed(out.strip().splitlines()):
        if line.startswith("workload="):
            d = {}
            for tok in line.split():
                k, _, v = tok.partition("=")
                d[k] = float(v) if NUMERIC.match(v) else v
            return d
    return None


def median_record(recs):
    out = {}
    for k in recs[0]:
        vals = [r[k] for r in recs if k in r]
        out[k] = statistics.median(vals) if isinstance(vals[0], float) else vals[0]
    # a record that already is a median (state rebuilt from a CSV) keeps its count
    out["reps"] = int(recs[0]["reps"]) if len(recs) == 1 and "reps" in recs[0] else len(recs)
    return out


def fmt_num(v, digits=2):
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}f}"


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def label(alloc):
    return next(l for n, l, _ in ALLOCATORS if n == alloc)


# ---- other work on the machine ---------------------------------------------

HZ = os.sysconf("SC_CLK_TCK")


def busy_seconds():
    """CPU seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / HZ


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def foreign_load(sample=0.5):
    """Cores used by other processes over the next `sample` seconds."""
    b0 = busy_seconds()
    if b0 is None:
        return 0.0
    t0 = time.time()
    time.sleep(sample)
    return max(0.0, (busy_seconds() - b0) / (time.time() - t0))


# ---- strace: system calls per HeapCreate+HeapDestroy ----------------------

def syscalls_per_op(avail, alloc):
    if not shutil.which("strace") or alloc not in avail:
        return None
    counts = []
    for scale in (0.01, 0.06):  # 200 and 1200 operations; the difference cancels process start-up
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as tf:
            argv, env = command(avail, alloc, "create", scale)
            r = subprocess.run(["strace", "-f", "-c", "-o", tf.name] + argv, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                return None
            c = {}
            for line in open(tf.name):
                m = re.match(r"^\s*[0-9.]+\s+[0-9.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
                if m and m.group(2) != "total":
                    c[m.group(2)] = int(m.group(1))
            counts.append(c)
    ops = 1000.0
    per = {k: (counts[1].get(k, 0) - counts[0].get(k, 0)) / ops for k in set(counts[0]) | set(counts[1])}
    per = {k: v for k, v in per.items() if v > 0.01}
    return per


# ---- the chart ---------------------------------------------------------------

COLORS = {
    "winheap-heap": "#1f77b4", "winheap-private": "#4fa3e0", "winheap-shim": "#9ecae9",
    "mimalloc": "#d62728", "jemalloc": "#2ca02c", "tcmalloc": "#ff7f0e", "glibc": "#7f7f7f",
    "mimalloc-heap": "#e377c2", "syscall-floor": "#8c564b",
}


def write_svg(path, res, allocs, workloads, title, subtitle):
    groups = []
    for w in workloads:
        ref = ref_mimalloc(res, w)
        if ref is None:
            continue
        bars = []
        for a in allocs:
            r = res.get((w, a))
            if r and r.get("seconds", 0) > 0 and ref > 0:
                bars.append((a, r["seconds"] / ref))
        if bars:
            groups.append((w, bars))
    if not groups:
        return
    vals = [v for _, b in groups for _, v in b]
    lo = 10 ** math.floor(math.log10(min(min(vals), 0.5)))
    hi = 10 ** math.ceil(math.log10(max(max(vals), 2.0)))
    W_BAR, GAP, LEFT, TOP, PH = 11, 18, 70, 70, 360
    width = LEFT + sum(len(b) * W_BAR + GAP for _, b in groups) + 30 + 170
    height = TOP + PH + 95

    def y(v):
        return TOP + PH - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * PH

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
         f'font-family="DejaVu Sans, Arial, sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{html.escape(title)}</text>',
         f'<text x="{LEFT}" y="42" fill="#555">{html.escape(subtitle)}</text>']
    # grid: 1-2-5 steps on the log axis
    dec = lo
    while dec <= hi * 1.0001:
        for m in (1, 2, 5):
            v = dec * m
            if v < lo * 0.999 or v > hi * 1.001:
                continue
            yy = y(v)
            strong = abs(v - 1.0) < 1e-9
            o.append(f'<line x1="{LEFT}" x2="{width - 190}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     f'stroke="{"#000" if strong else "#ddd"}" stroke-width="{1.5 if strong else 1}"/>')
            o.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{v:g}</text>')
        dec *= 10
    o.append(f'<text transform="translate(18,{TOP + PH / 2}) rotate(-90)" text-anchor="middle">'
             f'time / mimalloc time (log scale; lower is better)</text>')
    x = LEFT + 10
    for w, bars in groups:
        x0 = x
        for a, v in bars:
            yy = y(v)
            base = y(1.0)  # bars grow from 1.0: up is slower than mimalloc, down is faster
            h = max(abs(base - yy), 2.0)  # the reference itself (1.0) shows as a thin mark
            o.append(f'<rect x="{x}" y="{min(yy, base - 1.0):.1f}" width="{W_BAR - 1}" height="{h:.1f}" '
                     f'fill="{COLORS[a]}"><title>{html.escape(w)} {html.escape(a)}: {v:.2f}x mimalloc</title></rect>')
            x += W_BAR
        cx = (x0 + x) / 2
        o.append(f'<text x="{cx:.1f}" y="{TOP + PH + 14}" text-anchor="end" '
                 f'transform="rotate(-40 {cx:.1f} {TOP + PH + 14})">{html.escape(w)}</text>')
        x += GAP
    lx = width - 180
    for i, a in enumerate([a for a in allocs if any(a == b for _, bs in groups for b, _ in bs)]):
        ly = TOP + i * 18
        o.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{COLORS[a]}"/>')
        o.append(f'<text x="{lx + 18}" y="{ly + 10}">{html.escape(a)}</text>')
    o.append(f'<text x="{lx}" y="{TOP + 10 * 18 + 10}" fill="#555">create, destroy-free:</text>')
    o.append(f'<text x="{lx}" y="{TOP + 10 * 18 + 24}" fill="#555">ratio to mi_heap</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


# ---- reference figures ------------------------------------------------------

def ref_mimalloc(res, w):
    for a in ("mimalloc", "mimalloc-heap"):
        r = res.get((w, a))
        if r and r.get("seconds"):
            return r["seconds"]
    return None


def ref_rss(res, w, a):
    r = res.get((w, a))
    return r["maxrss_kb"] if r else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--alloc", default="")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--idle-budget", type=float, default=None,
                    help="seconds the whole run may wait, in total, for other work on the machine to stop "
                         "(before a run, while other processes use more than 0.3 of a core); "
                         "240 by default, 10 with --quick")
    ap.add_argument("--from-json", default="",
                    help="do not run anything: report again from the raw runs saved by an earlier run "
                         "(bench/results/latest.json)")
    args = ap.parse_args()
    root = args.root
    if args.from_json:
        with open(args.from_json) as f:
            state = json.load(f)
        report(root, state, args)
        return
    reps = args.reps or (1 if args.quick else 3)
    scale = 0.2 if args.quick else 1.0
    outdir = os.path.join(root, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    stem = "quick" if args.quick else "latest"

    avail, notes = setup_allocators(root)
    only = set(filter(None, args.only.split(",")))
    only_alloc = set(filter(None, args.alloc.split(",")))
    plan = []
    for w, allocs, _ in WORKLOADS:
        if only and w not in only:
            continue
        for a in allocs:
            if a in avail and (not only_alloc or a in only_alloc):
                plan.append((w, a))
    for n in notes:
        print("bench: note: " + n, file=sys.stderr)

    started = datetime.datetime.now().astimezone()
    load0 = os.getloadavg()
    total = len(plan) * reps
    runs = {}
    failures = {}
    k = 0
    t_start = time.time()
    idle_budget = args.idle_budget if args.idle_budget is not None else (10.0 if args.quick else 240.0)
    waited = 0.0
    for rep in range(reps):
        for w, a in plan:
            k += 1
            argv, env = command(avail, a, w, scale)
            waited_here = 0.0
            while idle_budget > 0:
                fl = foreign_load(0.3)
                if fl <= 0.3:
                    break
                if waited_here == 0.0:
                    print(f"bench: other processes use {fl:.1f} cores; waiting (budget left {idle_budget:.0f} s)",
                          file=sys.stderr, flush=True)
                idle_budget -= 0.3
                waited_here += 0.3
            waited += waited_here
            print(f"[{k}/{total}] {w} {a} (rep {rep + 1}/{reps}) ...", end="", file=sys.stderr, flush=True)
            b0, c0, t0 = busy_seconds(), children_cpu(), time.time()
            try:
                r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.timeout)
                rec = parse_line(r.stdout) if r.returncode == 0 else None
                err = None if rec else f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-200:]}"
            except subprocess.TimeoutExpired:
                rec, err = None, f"timed out after {args.timeout:.0f} s"
            if rec and a in LIBCHECK and LIBCHECK[a] not in str(rec.get("libs", "")):
                rec, err = None, f"LD_PRELOAD did not take effect (mapped: {rec.get('libs')})"
            if rec and b0 is not None:
                # cores used by anything but this run while it ran (the runner's own share is negligible)
                wall = max(time.time() - t0, 1e-3)
                rec["other_load"] = max(0.0, ((busy_seconds() - b0) - (children_cpu() - c0)) / wall)
            if rec:
                runs.setdefault((w, a), []).append(rec)
                print(f" {rec['seconds']:.3f} s, {rec['maxrss_kb'] / 1024:.1f} MiB"
                      + (f" (other load {rec['other_load']:.2f} cores)" if rec.get("other_load", 0) >= 0.3 else ""),
                      file=sys.stderr, flush=True)
            else:
                failures[(w, a)] = err
                print(f" FAILED ({err})", file=sys.stderr, flush=True)
    elapsed = time.time() - t_start
    disturbed = sum(1 for v in runs.values() for r in v if r.get("other_load", 0) >= 0.3)
    load1 = os.getloadavg()

    # syscalls per empty HeapCreate+HeapDestroy, and per floor operation
    sysc = {}
    if not only or "create" in only:
        for a in ("winheap-private", "syscall-floor"):
            sc = syscalls_per_op(avail, a)
            if sc is not None:
                sysc[a] = sc

    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src", "include", "CMakeLists.txt"],
                               capture_output=True, text=True).stdout.split("\n")
        dirty = [d[3:] for d in dirty if d.strip()]
        version = (head or "unknown") + (f" with uncommitted changes in {', '.join(dirty)}" if dirty else "")
    except OSError:
        version = "unknown"
    state = {
        "stem": stem, "quick": bool(args.quick), "argv": sys.argv[3:],
        "started": started.strftime("%Y-%m-%d %H:%M:%S %Z"), "date": started.strftime("%Y-%m-%d"),
        "version": version, "build": os.environ.get("WH_BENCH_BUILD", "unknown"), "reps": reps, "scale": scale, "total": total, "elapsed": elapsed,
        "load0": load0[0], "load1": load1[0], "waited": waited, "disturbed": disturbed, "notes": notes,
        "runs": [{"workload": w, "allocator": a, "records": v} for (w, a), v in runs.items()],
        "failures": [{"workload": w, "allocator": a, "error": e} for (w, a), e in failures.items()],
        "syscalls": sysc,
    }
    with open(os.path.join(outdir, stem + ".json"), "w") as f:
        json.dump(state, f, indent=1)
    report(root, state, args)


def report(root, state, args):
    outdir = os.path.join(root, "bench", "results")
    stem, reps, scale, total = state["stem"], state["reps"], state["scale"], state["total"]
    runs = {(r["workload"], r["allocator"]): r["records"] for r in state["runs"]}
    failures = {(r["workload"], r["allocator"]): r["error"] for r in state["failures"]}
    sysc, notes = state["syscalls"], state["notes"]
    res = {key: median_record(v) for key, v in runs.items()}

    # ---- CSV ----
    csv_path = os.path.join(outdir, stem + ".csv")
    with open(csv_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["workload", "allocator", "reps", "seconds", "maxrss_kb", "minflt", "ops",
                     "time_vs_mimalloc", "time_vs_glibc", "rss_vs_mimalloc", "rss_vs_glibc", "extra"])
        for w, allocs, _ in WORKLOADS:
            for a in allocs:
                r = res.get((w, a))
                if not r:
                    continue
                rm, rg = ref_mimalloc(res, w), res.get((w, "glibc"), {}).get("seconds")
                mm = ref_rss(res, w, "mimalloc") or ref_rss(res, w, "mimalloc-heap")
                mg = ref_rss(res, w, "glibc")
                extra = ";".join(f"{k2}={v}" for k2, v in r.items()
                                 if k2 not in ("workload", "api", "seconds", "maxrss_kb", "minflt", "ops", "reps"))
                wr.writerow([w, a, r["reps"], f"{r['seconds']:.6f}", int(r["maxrss_kb"]), int(r["minflt"]), int(r["ops"]),
                             f"{r['seconds'] / rm:.3f}" if rm else "", f"{r['seconds'] / rg:.3f}" if rg else "",
                             f"{r['maxrss_kb'] / mm:.3f}" if mm else "", f"{r['maxrss_kb'] / mg:.3f}" if mg else "", extra])

    # ---- tables ----
    cols = [a for a, _, _ in ALLOCATORS if any((w, a) in res for w, _, _ in WORKLOADS)]
    wls = [w for w, _, _ in WORKLOADS if any((w, a) in res for a in cols)]

    def matrix(fn):
        rows = []
        for w in wls:
            rows.append([w] + [fn(w, a) for a in cols])
        return md_table(["workload"] + [label(a) for a in cols], rows)

    def cell(w, a, f):
        r = res.get((w, a))
        if not r:
            return "-" if (w, a) not in failures else "FAIL"
        v = f(r)
        return fmt_num(v) if v is not None else "-"

    def ratio(w, a, key, refalloc):
        r = res.get((w, a))
        if not r:
            return "-" if (w, a) not in failures else "FAIL"
        if refalloc == "mimalloc":
            ref = ref_mimalloc(res, w) if key == "seconds" else (ref_rss(res, w, "mimalloc") or ref_rss(res, w, "mimalloc-heap"))
        else:
            rr = res.get((w, refalloc))
            ref = rr[key] if rr else None
        return fmt_num(r[key] / ref) if ref else "-"

    out = []
    out.append("### Time (seconds, median of %d)\n\n" % reps + matrix(lambda w, a: cell(w, a, lambda r: r["seconds"])))
    out.append("### Time / mimalloc time\n\n" + matrix(lambda w, a: ratio(w, a, "seconds", "mimalloc")))
    out.append("### Time / glibc time\n\n" + matrix(lambda w, a: ratio(w, a, "seconds", "glibc")))
    out.append("### Peak RSS (MiB, whole process)\n\n" + matrix(lambda w, a: cell(w, a, lambda r: r["maxrss_kb"] / 1024)))
    out.append("### Peak RSS / mimalloc peak RSS\n\n" + matrix(lambda w, a: ratio(w, a, "maxrss_kb", "mimalloc")))
    out.append("### Peak RSS / glibc peak RSS\n\n" + matrix(lambda w, a: ratio(w, a, "maxrss_kb", "glibc")))

    # workload-specific figures
    spec_rows = []

    def add(name, key, fmtf=lambda v: fmt_num(v)):
        row, w = [name], name.split(":")[0]  # the workload is the name before the colon
        for a in cols:
            r = res.get((w, a))
            row.append(fmtf(r[key]) if r and key in r and isinstance(r[key], float) else "-")
        spec_rows.append(row)

    add("scale: speed-up 2 threads / 1", "speedup")
    add("scale: other processes' load (cores)", "other_load")
    add("large: minor faults per step", "minflt_per_op")
    add("destroy: teardown ms", "teardown_s", lambda v: fmt_num(v * 1000))
    add("destroy-free: teardown ms", "teardown_s", lambda v: fmt_num(v * 1000))
    add("create: us per op", "us_per_op", lambda v: fmt_num(v, 3))
    add("create: minor faults per op", "minflt_per_op", lambda v: fmt_num(v, 3))
    add("footprint16: bytes per block", "bytes_per_block")
    add("footprint64: bytes per block", "bytes_per_block")
    out.append("### Workload figures\n\n" + md_table(["figure"] + [label(a) for a in cols], spec_rows))
    if sysc:
        srows = []
        for a, s in sysc.items():
            srows.append([a, fmt_num(sum(s.values()), 1), ", ".join(f"{k2} {v:g}" for k2, v in sorted(s.items()))])
        out.append("### System calls per empty create + destroy (strace -c, 1000 operations)\n\n" +
                   md_table(["", "calls per op", "by call"], srows))

    # ---- targets ----
    tg = targets(res, sysc)
    tlines = ["| target | allocator | figure | verdict |", "|---|---|---|---|"]
    for t, a, fig, ok in tg:
        tlines.append(f"| {t} | {a} | {fig} | {'met' if ok else '**missed**' if ok is not None else 'inconclusive'} |")
    out.append("### Targets (issue item 5)\n\n" + "\n".join(tlines))

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    meta = [
        f"- date: {state['started']}",
        f"- winheap: commit {state['version']} ({state.get('build', 'unknown')})",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
        f"- command: bench/run.sh {' '.join(state['argv'])}".rstrip(),
        f"- repetitions: {reps} (median kept), scale {scale}, {total} runs in {state['elapsed']:.0f} s",
        f"- load average at start {state['load0']:.2f}, at end {state['load1']:.2f}; waited {state['waited']:.0f} s "
        f"for other work to stop; runs disturbed by other processes (more than 0.3 of a core beside the run): "
        f"{state['disturbed']} of {total}",
    ]
    for n in notes:
        meta.append(f"- note: {n}")
    for (w, a), e in sorted(failures.items()):
        meta.append(f"- failed: {w} {a}: {e}")
    report_md = "\n".join(meta) + "\n\n" + "\n\n".join(out) + "\n"
    with open(os.path.join(outdir, stem + ".md"), "w") as f:
        f.write(report_md)
    print()
    print(report_md)

    if not state["quick"] and not args.no_chart:
        svg = os.path.join(root, "docs", "bench.svg")
        write_svg(svg, res, [a for a, _, _ in ALLOCATORS], [w for w, _, _ in WORKLOADS],
                  "winheap and peers: time relative to mimalloc",
                  f"{state['date']}, {os.cpu_count()} CPUs ({cpu}), median of {reps}; "
                  f"bench/run.sh")
        print(f"bench: chart written to {os.path.relpath(svg, root)}", file=sys.stderr)
    print(f"bench: results in {os.path.relpath(csv_path, root)} and {stem}.md", file=sys.stderr)


def r2(q):
    """A ratio with 2 decimals, or 3 where 2 would round a miss or a pass to 1.00."""
    return f"{q:.3f}" if f"{q:.2f}" == "1.00" and q != 1.0 else f"{q:.2f}"


def targets(res, sysc):
    """(target, allocator, figure, True/False/None) for every target of item 5."""
    out = []

    def sec(w, a):
        r = res.get((w, a))
        return r["seconds"] if r else None

    for a in WINHEAP:
        # small-block workloads at or below mimalloc's time
        worst, misses = None, []
        have = False
        for w in SMALL:
            s, m = sec(w, a), sec(w, "mimalloc")
            if s is None or m is None:
                continue
            have = True
            q = s / m
            if q > 1.0:
                misses.append(f"{w} {r2(q)}")
            worst = q if worst is None or q > worst else worst
        if have:
            out.append(("small-block workloads <= 1.00 x mimalloc time", a,
                        ("worst " + r2(worst)) + (("; over: " + ", ".join(misses)) if misses else ""), not misses))
    for a in WINHEAP:
        misses, figs, have = [], [], False
        for w in CROSS:
            s, m = sec(w, a), sec(w, "mimalloc")
            if s is None or m is None:
                continue
            have = True
            figs.append(f"{w} {r2(s / m)}")
            if s / m > 1.0:
                misses.append(w)
        if have:
            out.append(("cross-thread-free workloads <= 1.00 x mimalloc", a, ", ".join(figs), not misses))
    for a in WINHEAP:
        r = res.get(("scale", a))
        if r:
            load = r.get("other_load", 0.0)
            if load >= 0.5:  # another process held a core: two threads cannot run in parallel
                out.append(("two threads >= 1.8 x one thread", a,
                            f"{r['speedup']:.2f}x, but other processes used {load:.1f} cores meanwhile", None))
            else:
                out.append(("two threads >= 1.8 x one thread", a, f"{r['speedup']:.2f}x", r["speedup"] >= 1.8))
    for a in WINHEAP:
        misses, worst, have = [], None, False
        for w, _, _ in WORKLOADS:
            r = res.get((w, a))
            ref = res.get((w, "mimalloc")) or res.get((w, "mimalloc-heap"))
            if not r or not ref:
                continue
            have = True
            q = r["maxrss_kb"] / ref["maxrss_kb"]
            worst = q if worst is None or q > worst else worst
            if q > 1.10:
                misses.append(f"{w} {r2(q)}")
        if have:
            out.append(("peak RSS <= 1.10 x mimalloc on every workload", a,
                        ("worst " + r2(worst)) + (("; over: " + ", ".join(misses)) if misses else ""), not misses))
    g = res.get(("large", "glibc"))
    for a in WINHEAP:
        r = res.get(("large", a))
        if r and g:
            out.append(("large blocks: minor faults <= glibc's", a,
                        f"{r['minflt']:.0f} vs glibc {g['minflt']:.0f} ({r['minflt'] / g['minflt']:.2f}x)",
                        r["minflt"] <= g["minflt"]))
    r = res.get(("destroy", "winheap-private"))
    if r:
        mi = res.get(("destroy", "mimalloc-heap"))
        fig = f"{r['teardown_s'] * 1000:.2f} ms" + (f" (mi_heap_destroy {mi['teardown_s'] * 1000:.2f} ms)" if mi else "")
        out.append(("HeapDestroy of 1M small blocks <= 10 ms", "winheap-private", fig, r["teardown_s"] <= 0.010))
    r, fl = res.get(("create", "winheap-private")), res.get(("create", "syscall-floor"))
    if r and fl:
        q = r["us_per_op"] / fl["us_per_op"]
        sw, sf = sysc.get("winheap-private"), sysc.get("syscall-floor")
        scount = ""
        ok_sys = True
        if sw is not None and sf is not None:
            scount = f", {sum(sw.values()):.1f} vs {sum(sf.values()):.1f} syscalls"
            ok_sys = sum(sw.values()) <= sum(sf.values()) + 0.05
        out.append(("empty HeapCreate+HeapDestroy <= its syscalls + 1 page fault", "winheap-private",
                    f"{r['us_per_op']:.2f} us vs floor {fl['us_per_op']:.2f} us ({q:.2f}x, 10% noise allowed), "
                    f"{r['minflt_per_op']:.2f} faults{scount}",
                    q <= 1.10 and r["minflt_per_op"] <= 1.05 and ok_sys))
    for a in WINHEAP:
        for w, lim in (("footprint16", 17.0), ("footprint64", 68.0)):
            r = res.get((w, a))
            if r:
                out.append((f"{w[9:]}-byte block footprint <= {lim:g} bytes", a, f"{r['bytes_per_block']:.2f}",
                            r["bytes_per_block"] <= lim))
    return out


if __name__ == "__main__":
    main()
