"""Data generation, timed phases and the report of bench/migrate.sh (see docs/benchmarks.md,
"Migration"). Python 3.9+, standard library only.

    migrate_helper.py gen ROOT SMALL_FILES FILES_PER_DIR "LARGE_GIB..."   # writes the data set
    migrate_helper.py verify ROOT SMALL_FILES FILES_PER_DIR "LARGE_GIB..." # compares every byte
    migrate_helper.py timed OUTFILE ERRFILE ARGV...   # runs ARGV: wall seconds + its CPU seconds
    migrate_helper.py applied GPAIR SOCK NAME           # west updates the gpair's sync applied
    migrate_helper.py settle GPAIR SOCK NAME PID LIMIT [APPLIED_BEFORE]  # until nothing pending
    migrate_helper.py job FILE          # the job JSON `gpair --output json migrate --wait` printed
    migrate_helper.py alloc DIR         # bytes allocated (st_blocks) under DIR
    migrate_helper.py report FILE.jsonl [GOALS...]

The data is deterministic: the size of small file i is drawn from one seeded generator (log-normal,
median 32 KiB, clipped to 4 KiB..1 MiB) and its bytes from a generator seeded with i, so every
file's bytes are distinct and `verify` can regenerate them instead of keeping a copy.
"""
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time

CHUNK = 4 << 20
SMALL_MIN = 4 << 10
SMALL_MAX = 1 << 20
SMALL_MEDIAN = 32 << 10
SMALL_SIGMA = 1.0
SIZE_SEED = 20261121
SMALL_SEED = 0x5EED0000
LARGE_SEED = 0x1A46E000


def layout(small_n, per_dir, large_gib):
    """(relative path, size, seed) of every file of the data set."""
    r = random.Random(SIZE_SEED)
    mu = math.log(SMALL_MEDIAN)
    files = []
    ndirs = -(-small_n // per_dir) if small_n else 0
    width = max(3, len(str(max(ndirs - 1, 0))))
    fwidth = max(5, len(str(max(small_n - 1, 0))))
    for i in range(small_n):
        size = int(r.lognormvariate(mu, SMALL_SIGMA))
        size = min(SMALL_MAX, max(SMALL_MIN, size))
        files.append(("small/d%0*d/f%0*d" % (width, i // per_dir, fwidth, i), size, SMALL_SEED + i))
    for j, g in enumerate(large_gib):
        files.append(("large/big%d-%sGiB" % (j, g), int(float(g) * (1 << 30)), LARGE_SEED + j))
    return files


def parse_large(s):
    return [g for g in s.replace(",", " ").split() if g]


def gen(root, small_n, per_dir, large):
    files = layout(small_n, per_dir, large)
    t0 = time.monotonic()
    for rel, size, seed in files:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        r = random.Random(seed)
        with open(p, "wb") as f:
            left = size
            while left:
                n = min(CHUNK, left)
                f.write(r.randbytes(n))
                left -= n
    small = [s for rel, s, _ in files if rel.startswith("small/")]
    big = [s for rel, s, _ in files if rel.startswith("large/")]
    print(json.dumps({
        "small_files": len(small), "small_bytes": sum(small),
        "small_median": statistics.median(small) if small else None,
        "small_mean": statistics.mean(small) if small else None,
        "small_min": min(small) if small else None, "small_max": max(small) if small else None,
        "small_dirs": -(-len(small) // per_dir) if small else 0,
        "large_files": len(big), "large_bytes": sum(big), "gen_secs": time.monotonic() - t0}))


def verify(root, small_n, per_dir, large):
    bad = []
    n = 0
    for rel, size, seed in layout(small_n, per_dir, large):
        p = os.path.join(root, rel)
        n += 1
        try:
            st = os.stat(p)
            if st.st_size != size:
                bad.append("%s: size %d, want %d" % (rel, st.st_size, size))
                continue
            r = random.Random(seed)
            with open(p, "rb") as f:
                left = size
                while left:
                    k = min(CHUNK, left)
                    if f.read(k) != r.randbytes(k):
                        bad.append("%s: bytes differ near offset %d" % (rel, size - left))
                        break
                    left -= k
        except OSError as e:
            bad.append("%s: %s" % (rel, e))
    for b in bad[:20]:
        print("verify: " + b, file=sys.stderr)
    print(json.dumps({"files": n, "bad": len(bad)}))
    return not bad


def timed(out, err, argv):
    """Runs argv (stdout to OUT, stderr to ERR); prints wall seconds and the child's CPU seconds
    (user + system of it and of everything it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(out, "wb") as o, open(err, "wb") as e:
        r = subprocess.run(argv, stdout=o, stderr=e)
    secs = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"secs": secs, "client_cpu_s": round(cpu, 3), "rc": r.returncode}))


def sync_status(gpair, sock, name):
    r = subprocess.run([gpair, "--backend", sock, "--output", "json", "sync", "status", name],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("gpair sync status: " + r.stderr.strip())
    return json.loads(r.stdout)[0]


def settle(gpair, sock, name, pid, limit, before=None):
    """Waits until the gpair's initial sync is done and nothing has been pending for 1 s (the
    watcher delivers the events of the last moves a little later); prints the seconds until
    nothing was pending and the west updates (metadata and SetAttrObj) the sync applied since
    `before` (the `applied` counter before the phase; default: since this call)."""
    t0 = time.monotonic()
    first = sync_status(gpair, sock, name)
    if before is not None:
        first = {"applied": before}
    quiet_since = None
    while True:
        st = sync_status(gpair, sock, name)
        now = time.monotonic()
        if st.get("initial_sync_done") and st.get("pending", 1) == 0 and st.get("failing", 0) == 0:
            if quiet_since is None:
                quiet_since = (now, st.get("applied", 0))
            elif st.get("applied", 0) != quiet_since[1]:
                quiet_since = (now, st.get("applied", 0))
            elif now - quiet_since[0] >= 1.0:
                print(json.dumps({"settle_secs": round(quiet_since[0] - t0, 3),
                                  "sync_applied": st.get("applied", 0) - first.get("applied", 0)}))
                return
        else:
            quiet_since = None
        try:
            os.kill(int(pid), 0)
        except OSError:
            raise RuntimeError("gpair-backend exited")
        if now - t0 > limit:
            raise RuntimeError("not settled after %ds: %s" % (limit, json.dumps(st)))
        time.sleep(0.1)


def job(path):
    """The fields of a job report (`gpair --output json ... --wait`) the bench keeps."""
    j = json.load(open(path))
    keep = ("id", "state", "files_total", "files_done", "files_failed", "files_skipped",
            "files_noop", "files_dirty", "bytes_total", "bytes_done")
    out = {"job_" + k: j.get(k) for k in keep}
    if j.get("started_at_ms") and j.get("finished_at_ms"):
        out["job_secs"] = (j["finished_at_ms"] - j["started_at_ms"]) / 1000.0
        out["job_queued_secs"] = (j["started_at_ms"] - j["created_at_ms"]) / 1000.0
    out["job_files"] = [f for f in j.get("files", [])][:5]
    print(json.dumps(out))


def alloc(root):
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            total += os.lstat(os.path.join(d, f)).st_blocks * 512
    print(total)


# ------------------------------------------------------------------------ report

TOOLS = [("gpair", "gpair migrate -r --wait", "gpair recall -r --wait"),
         ("rclone-default", "rclone copy (defaults)", "rclone copy (defaults)"),
         ("rclone-tuned", "rclone copy (tuned)", "rclone copy (tuned)"),
         ("cp", "cp -r + sync", "cp -r + sync")]
DIRS = [("offload", "east → west"), ("recall", "west → east")]


def fmt(x):
    if x is None:
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return "%.0f" % x
    if a >= 100:
        return "%.1f" % x
    if a >= 1:
        return "%.2f" % x
    return "%.3g" % x


def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    m = statistics.median(vals)
    spread = (max(vals) - min(vals)) / 2 / m * 100 if m else 0.0
    return m, spread


def cell(vals, spread=True):
    m, s = med(vals)
    if m is None:
        return "-"
    return fmt(m) + (" ±%.0f%%" % s if spread and len(vals) > 1 else "")


def cpu_total(l):
    parts = [l.get(k) for k in ("daemon_cpu_s", "gateway_cpu_s", "client_cpu_s")]
    parts = [p for p in parts if p is not None]
    return sum(parts) if parts else None


def report(path, goals):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for l in lines:
        by.setdefault((l["set"], l["dir"], l["tool"]), []).append(l)
    rounds = max([l["round"] for l in lines] or [0])
    out = []
    verdicts = []
    summary = []
    for dset in ("small", "large"):
        if not any(k[0] == dset for k in by):
            continue
        for d, dlabel in DIRS:
            rows = [(t, lab_o if d == "offload" else lab_r) for t, lab_o, lab_r in TOOLS]
            # cp + sync is measured once per round; it is the local limit of both directions.
            src = lambda t: by.get((dset, "offload" if t == "cp" else d, t))
            if not any(src(t) for t, _ in rows if t != "cp"):
                continue
            any_l = next(l for t, _ in rows for l in (src(t) or []))
            out.append("%s files, %s (%d files, %.3f GiB):" % (
                dset, dlabel, any_l["files"], any_l["bytes"] / 2**30))
            out.append("")
            out.append("| tool | secs | files/s | MB/s | daemon CPU s | gateway CPU s | client CPU s "
                       "| CPU-s/GiB | load avg |")
            out.append("|---|---|---|---|---|---|---|---|---|")
            meds = {}
            for t, label in rows:
                ls = src(t)
                if not ls:
                    continue
                col = lambda f: [f(x) for x in ls]
                gib = ls[0]["bytes"] / 2**30
                cpu = col(lambda x: None if cpu_total(x) is None else cpu_total(x) / gib)
                meds[t] = {"files_per_s": med(col(lambda x: x["files_per_s"]))[0],
                           "mb_per_s": med(col(lambda x: x["mb_per_s"]))[0],
                           "cpu_per_gib": med(cpu)[0]}
                out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    label, cell(col(lambda x: x["secs"])), cell(col(lambda x: x["files_per_s"])),
                    cell(col(lambda x: x["mb_per_s"])), cell(col(lambda x: x.get("daemon_cpu_s"))),
                    cell(col(lambda x: x.get("gateway_cpu_s"))),
                    cell(col(lambda x: x.get("client_cpu_s"))), cell(cpu),
                    " / ".join(x.get("loadavg", "?").split()[0]
                               for x in sorted(ls, key=lambda x: x["round"]))))
            out.append("")
            g = meds.get("gpair")
            rc = [(t, meds[t]) for t in ("rclone-default", "rclone-tuned") if t in meds]
            best = max(rc, key=lambda tm: tm[1]["mb_per_s"]) if rc else None
            cp = meds.get("cp")
            if g:
                det = {}
                gl = by.get((dset, d, "gpair"), [])
                for x in gl:
                    if x.get("job_secs") and x.get("tier_transfers"):
                        # Mean time a file spends in one of the tier.transfers slots.
                        x["ms_per_file_in_flight"] = x["job_secs"] * 1000 * min(
                            x["tier_transfers"], x["files"]) / x["files"]
                for key in ("job_secs", "ms_per_file_in_flight", "settle_secs", "sync_applied",
                            "east_alloc_before", "east_alloc_after"):
                    v = med([x.get(key) for x in gl])[0]
                    if v is not None:
                        det[key] = v
                if det:
                    out.append("gpair details (medians): " + ", ".join(
                        ("%s %s MiB" % (k, fmt(v / 2**20))) if k.startswith("east_alloc")
                        else "%s %s" % (k, fmt(v)) for k, v in det.items()))
                    out.append("")
            for t, _ in rows:
                if t.startswith("rclone") and d == "recall" and src(t):
                    v = med([x.get("sync_after_secs") for x in src(t)])[0]
                    if v is not None:
                        out.append("%s: a sync right after the download took %s s (median; not "
                                   "counted: rclone does not fsync, gpair recall does)" % (t, fmt(v)))
                        out.append("")
            if g and (best or cp):
                out.append("```")
                if best:
                    out.append("gpair / rclone (best: %s) files/s = %s / %s = %.2f" % (
                        best[0][7:], fmt(g["files_per_s"]), fmt(best[1]["files_per_s"]),
                        g["files_per_s"] / best[1]["files_per_s"]))
                    out.append("gpair / rclone (best: %s) MB/s    = %s / %s = %.2f" % (
                        best[0][7:], fmt(g["mb_per_s"]), fmt(best[1]["mb_per_s"]),
                        g["mb_per_s"] / best[1]["mb_per_s"]))
                    if g["cpu_per_gib"] and best[1]["cpu_per_gib"]:
                        out.append("gpair / rclone (best: %s) CPU-s/GiB = %s / %s = %.2f" % (
                            best[0][7:], fmt(g["cpu_per_gib"]), fmt(best[1]["cpu_per_gib"]),
                            g["cpu_per_gib"] / best[1]["cpu_per_gib"]))
                if cp:
                    out.append("gpair / (cp -r + sync) MB/s = %s / %s = %.2f" % (
                        fmt(g["mb_per_s"]), fmt(cp["mb_per_s"]), g["mb_per_s"] / cp["mb_per_s"]))
                    out.append("gpair / (cp -r + sync) files/s = %s / %s = %.2f" % (
                        fmt(g["files_per_s"]), fmt(cp["files_per_s"]),
                        g["files_per_s"] / cp["files_per_s"]))
                out.append("```")
                out.append("")
                verb = "migrate" if d == "offload" else "recall"
                if dset == "small" and best:
                    r = g["files_per_s"] / best[1]["files_per_s"]
                    verdicts.append("%s small files, %s: files/s >= 3x rclone: %.2fx (%s vs %s files/s)" % (
                        "PASS" if r >= 3 else "MISS", verb, r, fmt(g["files_per_s"]),
                        fmt(best[1]["files_per_s"])))
                if dset == "large" and best:
                    r = g["mb_per_s"] / best[1]["mb_per_s"]
                    verdicts.append("%s large files, %s: MB/s >= 2x rclone: %.2fx (%s vs %s MB/s)" % (
                        "PASS" if r >= 2 else "MISS", verb, r, fmt(g["mb_per_s"]),
                        fmt(best[1]["mb_per_s"])))
                if dset == "large" and cp:
                    r = g["mb_per_s"] / cp["mb_per_s"]
                    verdicts.append("%s large files, %s: MB/s >= 0.85x cp -r + sync: %.2fx (%s vs %s MB/s)" % (
                        "PASS" if r >= 0.85 else "MISS", verb, r, fmt(g["mb_per_s"]),
                        fmt(cp["mb_per_s"])))
    loads = [float(l["loadavg"].split()[0]) for l in lines if l.get("loadavg")]
    out.append("Medians over %d round(s); ±x%% = half the min-max spread relative to the median; "
               "MB = 10^6 bytes; CPU-s/GiB = (daemon + gateway + client CPU seconds) per GiB moved; "
               "load avg = the 1-minute load average when the phase started, round by round%s." % (
                   rounds, " (%.2f..%.2f over the run)" % (min(loads), max(loads)) if loads else ""))
    out.extend(goals_block(verdicts, "(no gpair phase with a peer to compare)"))
    print("\n".join(out))


def goals_block(verdicts, none):
    """The report's closing lines: its PASS/MISS verdicts, or `none` without any."""
    return ["", "Goals:", "", "```", *(verdicts or [none]), "```"]


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "gen":
            gen(args[0], int(args[1]), int(args[2]), parse_large(args[3]))
        elif cmd == "verify":
            sys.exit(0 if verify(args[0], int(args[1]), int(args[2]), parse_large(args[3])) else 1)
        elif cmd == "timed":
            timed(args[0], args[1], args[2:])
        elif cmd == "settle":
            settle(args[0], args[1], args[2], args[3], float(args[4]),
                   int(args[5]) if len(args) > 5 else None)
        elif cmd == "applied":
            print(sync_status(args[0], args[1], args[2]).get("applied", 0))
        elif cmd == "job":
            job(args[0])
        elif cmd == "alloc":
            alloc(args[0])
        elif cmd == "report":
            report(args[0], args[1:])
        else:
            raise SystemExit("unknown helper command " + cmd)
    except RuntimeError as e:
        print("migrate bench: %s" % e, file=sys.stderr)
        sys.exit(1)
