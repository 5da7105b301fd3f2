"""A private set larger than the process may hold: `dpal train` on an image folder, held in
memory (`folder:`) and read per batch (`stream:`), each in a child process under the same
address-space limit (RLIMIT_DATA: the heap and every private writable mapping); prints whether
each completed, its wall time and its peak resident memory.

    python scripts/npz_to_folder.py ../shared/datasets/cifar10 /tmp/cifar10-folder
    python benchmarks/streaming_memory.py /tmp/cifar10-folder --limit-mib 1500
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import resource, sys
limit = int(sys.argv[1]) * 2**20
if limit > 0:
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
from dpal.cli import main
code = main(sys.argv[2:])
print("PEAK_RSS_MIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)
sys.exit(code)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="train/<class>/… and test/<class>/…")
    p.add_argument("--limit-mib", type=int, default=1500, help="RLIMIT_DATA of each run (0: none)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, default=Path("runs/streaming-memory"))
    p.add_argument("--image-size", type=int, help="resize the images (a larger set in memory)")
    p.add_argument("--kinds", nargs="+", default=["folder", "stream"])
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    rows = []
    for kind in a.kinds:
        out = a.out / f"{kind}-{int(time.time())}"
        argv = ["train", "--dataset", f"{kind}:{a.folder}", "--model", "cnn-gn",
                "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--epsilon", "8",
                "--out", str(out), "--quiet"]  # fmt: skip
        if a.image_size:
            argv += ["--image-size", str(a.image_size)]
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, str(a.limit_mib), *argv],
                              capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - start
        peak = [float(line.split()[1]) for line in done.stdout.splitlines()
                if line.startswith("PEAK_RSS_MIB")]  # fmt: skip
        last = (done.stdout.strip().splitlines() or [""])[0]
        error = "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]
        row = {"dataset": f"{kind}:", "limit_mib": a.limit_mib, "completed": done.returncode == 0,
               "wall_s": round(wall, 1), "peak_rss_mib": peak[0] if peak else None,
               "result": last if done.returncode == 0 else error[:200]}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"largest child peak RSS: {children:.0f} MiB")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
