"""Plot total throughput against threads for every system of benches/compare.rs.

Reads the summary the comparison writes (bench-summary.json in the target
folder) and draws docs/threads.svg. Needs matplotlib, for example in a
throwaway virtual environment:

    python3 -m venv /tmp/plot && /tmp/plot/bin/pip install matplotlib
    /tmp/plot/bin/python docs/plot_threads.py [summary.json] [output.svg]
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
from matplotlib.ticker import FuncFormatter  # noqa: E402

SYSTEMS = ["ours", "published_0_2_0", "published_0_3_0", "fastrace", "floor"]
STYLES = {
    "ours": dict(color="tab:blue", marker="o", linewidth=2.5),
    "published_0_2_0": dict(color="tab:red", marker="s"),
    "published_0_3_0": dict(color="tab:orange", marker="^"),
    "fastrace": dict(color="tab:green", marker="D"),
    "floor": dict(color="gray", marker="x", linestyle="--"),
}


def default_summary_path():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return os.path.join(target, "bench-summary.json")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    summary_path = sys.argv[1] if len(sys.argv) > 1 else default_summary_path()
    output = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "threads.svg")

    with open(summary_path, encoding="utf-8") as handle:
        threads = json.load(handle)["threads"]
    counts = sorted(threads, key=int)

    plt.rcParams["svg.fonttype"] = "none"
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for system in SYSTEMS:
        values = [threads[count][system] / 1e6 for count in counts]
        axes.plot([int(count) for count in counts], values, label=system, **STYLES[system])

    axes.set_xscale("log", base=2)
    axes.set_xticks([int(count) for count in counts], labels=counts)
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _position: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.set_xlabel("recording threads (machine: 2 cores)")
    axes.set_ylabel("fully instrumented requests per second (millions, log scale)")
    axes.set_title("Throughput against threads, one shared recorder (median of rounds)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=len(SYSTEMS), frameon=False)
    figure.tight_layout()
    figure.savefig(output, metadata={"Date": None})
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
