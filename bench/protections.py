#!/usr/bin/env python3
"""bench/protections.py - what each protection costs, measured the way the README's "Speed" tables are.

    python3 bench/protections.py [--rounds N] [--scale X] [--callgrind] [workload ...]

Builds four variants of the static library (CMake, Release) in bench/build/prot-*/ and wh_bench against each:
the default; -DWINHEAP_HARDENING=OFF (the hardening issue's list: keyed header checks, keyed and checked LFH links,
the reuse delay, the shuffled order of fresh slots); -DWINHEAP_ZERO_ON_FREE=OFF (no zeroing of freed blocks and no
check on their reuse: reliability rows 11 and 13); both off. Those switches exist only for this measurement.

Time: every round runs six configurations in alternating order (the four builds, the default with
WINHEAP_ZERO_ON_FREE=0, and mimalloc preloaded into wh_bench_malloc when libmimalloc is installed), so that the
machine's slow minutes hit them alike; the table gives median seconds and the medians of the per-round ratios,
with the range of the hardening's ratio.  A running fuzz_heap is stopped (SIGSTOP) while a workload is measured
and continued after it.  --callgrind counts instructions instead (one run each, deterministic).
"""
import argparse, os, re, signal, statistics as st, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "build")
VARIANTS = {"def": [], "noharden": ["-DWINHEAP_HARDENING=OFF"], "nozero": ["-DWINHEAP_ZERO_ON_FREE=OFF"],
            "none": ["-DWINHEAP_HARDENING=OFF", "-DWINHEAP_ZERO_ON_FREE=OFF"]}
MIMALLOC = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"
CFLAGS = ["-O2", "-g", "-std=gnu11", "-fno-builtin-malloc", "-fno-builtin-free", "-fno-builtin-realloc",
          "-fno-builtin-calloc"]
CG_SCALE = {"pairs": 0.05, "batch": 0.05, "workingset": 0.1, "realloc": 0.05, "larson": 0.05, "prodcons": 0.05,
            "scale": 0.02, "destroy": 0.2, "threads": 0.1, "large": 0.05}


def sh(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)


def build():
    """The four wh_bench binaries (and wh_bench_malloc); returns {variant: path}."""
    bins = {}
    for v, opts in VARIANTS.items():
        b = os.path.join(OUT, "prot-" + v)
        sh(["cmake", "-S", ROOT, "-B", b, "-DCMAKE_BUILD_TYPE=Release", "-DWINHEAP_TESTS=OFF"] + opts)
        sh(["cmake", "--build", b, "-j", str(os.cpu_count() or 2), "--target", "winheap_static"])
        exe = os.path.join(b, "wh_bench")
        sh(["gcc"] + CFLAGS + ["-I", os.path.join(ROOT, "include"), "-o", exe, os.path.join(ROOT, "bench", "wh_bench.c"),
                               os.path.join(b, "libwinheap.a"), "-lpthread", "-lm"])
        bins[v] = exe
    exe = os.path.join(OUT, "prot-wh_bench_malloc")
    sh(["gcc"] + CFLAGS + ["-DWH_NO_WINHEAP", "-o", exe, os.path.join(ROOT, "bench", "wh_bench.c"), "-lpthread", "-lm"])
    bins["malloc"] = exe
    return bins


def configs(bins):
    c = {"default": (bins["def"], "private", {}), "hardening off": (bins["noharden"], "private", {}),
         "ZERO_ON_FREE=0": (bins["def"], "private", {"WINHEAP_ZERO_ON_FREE": "0"}),
         "zero off (built)": (bins["nozero"], "private", {}), "both off": (bins["none"], "private", {})}
    if os.path.exists(MIMALLOC):
        c["mimalloc"] = (bins["malloc"], "malloc", {"LD_PRELOAD": MIMALLOC})
    return c


def run(cfg, workload, scale):
    exe, api, env = cfg
    e = dict(os.environ)
    e.update(env)
    out = subprocess.run([exe, workload, "api=" + api, "scale=%g" % scale], capture_output=True, text=True, env=e,
                         check=True).stdout
    return float(re.search(r"seconds=([0-9.]+)", out).group(1))


def fuzzers(sig):
    for pid in subprocess.run(["pgrep", "-f", "fuzz_heap"], capture_output=True, text=True).stdout.split():
        try:
            os.kill(int(pid), sig)
        except ProcessLookupError:
            pass


def timing(bins, workloads, rounds, scale):
    c = configs(bins)
    names = list(c)
    pct = lambda r: "%+.1f%%" % (100 * (r - 1))
    print("| workload | " + " | ".join(names) + " | hardening (range) | zero on free | default / mimalloc |")
    print("|---|" + "---:|" * (len(names) + 3))
    for w in workloads:
        t = {n: [] for n in names}
        fuzzers(signal.SIGSTOP)
        try:
            for r in range(rounds):
                for n in (names if r % 2 == 0 else names[::-1]):
                    t[n].append(run(c[n], w, scale))
        finally:
            fuzzers(signal.SIGCONT)
        ratios = lambda a, b: [x / y for x, y in zip(t[a], t[b])]
        h = ratios("default", "hardening off")
        mi = "%.2f" % st.median(ratios("default", "mimalloc")) if "mimalloc" in t else "-"
        print("| %s | %s | %s (%+.0f…%+.0f) | %s | %s |" % (
            w, " | ".join("%.4f" % st.median(t[n]) for n in names), pct(st.median(h)), 100 * (min(h) - 1),
            100 * (max(h) - 1), pct(st.median(ratios("default", "zero off (built)"))), mi), flush=True)


def callgrind(bins, workloads):
    c = configs(bins)
    c.pop("mimalloc", None)
    names = list(c)
    print("| workload (scale) | " + " | ".join(names) + " | hardening | zero on free |")
    print("|---|" + "---:|" * (len(names) + 2))
    for w in workloads:
        s = CG_SCALE.get(w, 0.05)
        n = {}
        for name in names:
            exe, api, env = c[name]
            with tempfile.NamedTemporaryFile() as f:
                e = dict(os.environ)
                e.update(env)
                subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + f.name, exe, w, "api=" + api,
                                "scale=%g" % s], capture_output=True, env=e, check=True)
                n[name] = int(re.search(r"^(?:summary|totals): (\d+)", open(f.name).read(), re.M).group(1))
        print("| %s (%g) | %s | %+.1f%% | %+.0f%% |" % (
            w, s, " | ".join("%.1f M" % (n[x] / 1e6) for x in names), 100 * (n["default"] / n["hardening off"] - 1),
            100 * (n["default"] / n["zero off (built)"] - 1)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("workloads", nargs="*")
    a = ap.parse_args()
    w = a.workloads or "pairs batch workingset larson prodcons threads realloc large destroy scale".split()
    bins = build()
    if a.callgrind:
        callgrind(bins, w)
    else:
        timing(bins, w, a.rounds, a.scale)


if __name__ == "__main__":
    sys.exit(main())
