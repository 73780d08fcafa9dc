"""Print the latest benchmark figures (benchmarks/results/*.json) as one short table."""

from __future__ import annotations

import json

from benchmarks.common import RESULTS


def rows() -> list[tuple[str, str]]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        name = r["benchmark"]
        if name == "e2e":
            text = (
                f"annotate {r['annotate_marginal_audio_s_per_s']} audio-s/s at the margin vs "
                f"faster-whisper alone {r['whisper_alone_audio_s_per_s']}: ratio {r['ratio_marginal']}"
            )
        elif name == "stages":
            s = r["stages"]
            text = " · ".join(
                f"{k} RTFx {s[k]['rtfx']}" for k in ("decode_vad", "asr", "features", "label")
            )
            m = r["run_memory"]
            text += (
                f" · run peak PSS 1× {m['peak_tree_pss_mib_1x']} MiB, 10× "
                f"{m['peak_tree_pss_mib_10x']} MiB (ratio {m['ratio']})"
            )
        elif name == "listing":
            text = f"peak RSS ratio {r['objects'][0]} → {r['objects'][-1]} objects: " + ", ".join(
                f"{mode} {ratio}" for mode, ratio in r["peak_rss_ratio"].items()
            )
        elif name == "cluster":
            text = " · ".join(
                f"{n} node(s): actors that did work "
                + ", ".join(
                    f"{stage} {sum(per.values())} on {len(per)}"
                    for stage, per in size["actors_that_did_work_per_node"].items()
                )
                for n, size in r["by_nodes"].items()
            )
        elif name == "sink":
            text = (
                " · ".join(
                    f"{k} {v['files_per_s']} files/s, {v['objects_per_10k_files']} objects/10k"
                    for k, v in r["results"].items()
                )
                + f" (64-GPU cluster needs {r['cluster_64_gpu_files_per_s']} files/s)"
            )
        elif name == "query":
            b, a = r["before_compaction"], r["after_compaction"]
            text = (
                f"group-by over {r['input_files']} files ({r['segments']} segments) via the CLI: "
                f"{b['cli_s']} s before compaction ({b['parquet_files']['segments']} files), "
                f"{a['cli_s']} s after ({a['parquet_files']['segments']}); query alone "
                f"{b['query_s']} → {a['query_s']} s"
            )
        elif name == "paths":
            text = (
                " · ".join(
                    f"{corpus}: UA full {c['full']['ua']}, no audio {c['no_audio']['ua']}, "
                    f"no text {c['no_text']['ua']}"
                    for corpus, c in r["corpora"].items()
                )
                + f" (chance {r['chance_ua']})"
            )
        elif name == "labeler":
            text = json.dumps({k: v for k, v in r.items() if "per_s" in k or "speedup" in k})
        else:
            text = json.dumps(
                {k: v for k, v in r.items() if k not in ("machine", "at", "benchmark")}
            )[:200]
        out.append((name, text))
    return out


if __name__ == "__main__":
    for name, text in rows():
        print(f"{name:16} {text}")
