"""A self-contained HTML report of an annotator output: one file, plotly.js inlined, no network.

Sections: run figures, totals, an emotion timeline per call for a bounded, chosen set of calls
(both channels of a split call in one timeline; one bar per segment, coloured by emotion,
transcript on hover), emotion shares of those recordings and per channel, the confidence
distribution, the confidence per label and the unsure share (abstention), which expert decided
(context bundles' gate weights), and the errors.
Everything comes from the output through the same DuckDB views
``annotator query`` uses; every figure over the whole output is an aggregate computed in SQL, so
the page and its making stay small whatever the size of the output.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from annotator.config import S3Config
from annotator.schema import UNSURE

PALETTE = [
    "#4C78A8",
    "#E45756",
    "#72B7B2",
    "#F58518",
    "#54A24B",
    "#B279A2",
    "#EECA3B",
    "#9D755D",
]
KNOWN_COLOURS = {
    "neutral": "#9E9E9E",
    "angry": "#D62728",
    "anger": "#D62728",
    "sad": "#1F77B4",
    "sadness": "#1F77B4",
    "happy": "#F2B701",
    "joy": "#F2B701",
}
MAX_CALLS = 20  # timelines drawn when no call is chosen
MAX_ERRORS = 200  # error rows listed (all are counted by type)

# Errors in the page (scripts, plotly, console.error) are counted into <body data-errors>; once
# every figure is drawn <body data-rendered> is set. Tests read both from the rendered DOM.
WATCH = """
<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
(function () {
  var original = console.error;
  console.error = function () { window.__errors.push(Array.from(arguments).join(' ')); original.apply(console, arguments); };
})();
window.addEventListener('load', function () {
  var plots = document.querySelectorAll('.plotly-graph-div');
  Promise.all(Array.from(plots).map(function (p) { return p._fullLayout ? Promise.resolve() : new Promise(function (r) { p.on('plotly_afterplot', r); }); }))
    .then(function () { document.body.dataset.errors = String(window.__errors.length); document.body.dataset.rendered = 'true'; });
});
</script>
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ddd; padding: 4px 8px; }
th { background: #f4f4f4; text-align: left; } .note { color: #666; font-size: 0.9em; }
.recording { margin: 1em 0 0.2em; font-family: monospace; font-size: 0.9em; }
"""


def colours(labels: list[str]) -> dict[str, str]:
    out, spare = {}, iter(PALETTE)
    for label in labels:
        out[label] = KNOWN_COLOURS.get(label) or next(spare, "#777777")
    return out


def _table(headers: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _div(fig, div_id: str) -> str:
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False}
    )


def timeline(call_id: str, segments: list[dict], palette: dict[str, str]):
    """One horizontal bar per segment, from start_s to end_s, coloured by emotion; one row per
    channel of the call."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for emotion in palette:
        mine = [s for s in segments if s["emotion"] == emotion]
        if not mine:
            continue
        fig.add_trace(
            go.Bar(
                name=emotion,
                orientation="h",
                y=["mixed" if s["channel"] is None else f"channel {s['channel']}" for s in mine],
                base=[s["start_s"] for s in mine],
                x=[s["end_s"] - s["start_s"] for s in mine],
                marker_color=palette[emotion],
                hovertext=[
                    f"{s['start_s']:.1f}–{s['end_s']:.1f} s · {emotion} "
                    f"({s['emotion_confidence']:.2f})<br>{html.escape(s['text'] or '(no words)')}"
                    for s in mine
                ],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        barmode="overlay",
        height=140 + 30 * len({s["channel"] for s in segments}),
        margin={"l": 90, "r": 20, "t": 20, "b": 40},
        xaxis_title="seconds",
        legend={"orientation": "h", "y": -0.5},
    )
    return fig


def _share_bars(shares, key: str, title: str, palette: dict[str, str], div_id: str) -> str:
    """Each ``key``'s speech seconds split by emotion, as shares of 1."""
    import plotly.express as px

    grouped = shares.groupby([key, "emotion"], as_index=False)["seconds"].sum()
    grouped["share"] = grouped["seconds"] / grouped.groupby(key)["seconds"].transform("sum")
    fig = px.bar(
        grouped,
        x="share",
        y=key,
        color="emotion",
        orientation="h",
        color_discrete_map=palette,
        title=title,
    )
    return _div(fig.update_layout(height=200 + 24 * grouped[key].nunique()), div_id)


def _experts_section(rows, where: str) -> list[str]:
    """A context bundle's gate: per expert, the segments it decided (largest weight)
    and its mean weight; nothing when no row has expert weights."""
    has = "AND" if where else "WHERE"
    decided = rows(
        "SELECT w.expert, count(*) FILTER (WHERE w.weight = top), round(avg(w.weight), 3) "
        "FROM (SELECT unnest(expert_weights) AS w, "
        "list_max(list_transform(expert_weights, lambda x: x.weight)) AS top "
        f"FROM segments {where} {has} expert_weights IS NOT NULL) GROUP BY ALL ORDER BY 1"
    )
    if not decided:
        return []
    return [
        "<h2>Which expert decided (context bundles)</h2>",
        "<p class='note'>the gate's weights over the speech, text and cross-modal experts per "
        "segment (column expert_weights): segments where each weighed most, and its mean "
        "weight</p>",
        _table(["expert", "segments decided", "mean weight"], decided),
    ]


def build_report(
    output: str,
    s3: S3Config | None = None,
    run_id: str | None = None,
    calls: Sequence[str] = (),
    max_calls: int = MAX_CALLS,
) -> str:
    """The report's HTML for ``output`` (all runs, or one ``run_id``). Timelines are drawn for
    ``calls`` (call_ids), or else for the ``max_calls`` most recently processed calls."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    from annotator.query import Annotations

    ann = Annotations(output, s3)
    where = "WHERE run_id = $run" if run_id else ""
    params = {"run": run_id} if run_id else {}

    def rows(sql: str, **extra) -> list[tuple]:
        return ann.sql(sql, {**params, **extra} or None).fetchall()

    runs = rows(
        "SELECT run_id, started_at, round(wall_s, 1), recordings, segments, errors, "
        f"round(audio_hours, 4), round(rtfx, 1), bundle_kind, bundle_version FROM runs {where} "
        "ORDER BY started_at"
    )
    (totals,) = rows(
        "SELECT count(DISTINCT call_id), count(DISTINCT recording_id), count(*), "
        f"round(coalesce(sum(end_s - start_s), 0) / 3600, 3) FROM segments {where}"
    )
    labels = [r[0] for r in rows(f"SELECT DISTINCT emotion FROM segments {where} ORDER BY 1")]
    palette = colours(labels)
    parts = [f"<h1>Emotion report · {html.escape(output)}</h1>"]
    if run_id:
        parts.append(f"<p class='note'>run {html.escape(run_id)}</p>")
    parts.append("<h2>Runs</h2>")
    parts.append(
        _table(
            [
                "run",
                "started",
                "wall s",
                "recordings",
                "segments",
                "errors",
                "audio h",
                "RTFx",
                "kind",
                "bundle",
            ],
            runs,
        )
    )
    parts.append(_table(["calls", "recordings", "segments", "speech h"], [totals]))
    # Which model labelled what: an output may hold rows of several bundles and kinds.
    labelled_by = rows(
        "SELECT bundle_kind, bundle_version, count(DISTINCT call_id), count(*), "
        "round(sum(end_s - start_s) / 3600, 3), min(processed_at), max(processed_at) "
        f"FROM segments {where} GROUP BY ALL ORDER BY min(processed_at)"
    )
    parts.append("<h2>Labelled by</h2>")
    parts.append(
        _table(
            ["kind", "bundle", "calls", "segments", "speech h", "first", "last"],
            labelled_by,
        )
    )

    parts.append("<h2>Emotion timeline per call</h2>")
    chosen = list(calls) or [
        r[0]
        for r in rows(
            f"SELECT call_id FROM segments {where} GROUP BY call_id "
            "ORDER BY max(processed_at) DESC, call_id LIMIT $max_calls",
            max_calls=max_calls,
        )
    ]
    parts.append(
        f"<p class='note'>{len(chosen)} of {totals[0]} calls"
        + ("" if calls else " (the most recently processed; choose others with --call)")
        + "</p>"
    )
    segments = (
        ann.sql(
            "SELECT call_id, recording_id, source_uri, member, channel, segment_index, start_s, "
            "end_s, text, emotion, emotion_confidence FROM segments "
            f"{where or 'WHERE true'} AND list_contains($calls, call_id) "
            "ORDER BY source_uri, member, call_id, start_s, recording_id",
            {**params, "calls": chosen},
        )
        .to_arrow_table()
        .to_pylist()
    )
    by_call: dict[str, list[dict]] = {}
    for segment in segments:
        by_call.setdefault(segment["call_id"], []).append(segment)
    for call_id, segs in by_call.items():
        name = segs[0]["source_uri"] + (f"!{segs[0]['member']}" if segs[0]["member"] else "")
        channels = len({s["channel"] for s in segs})
        parts.append(
            f"<div class='recording'>{html.escape(name)} · {call_id} · {len(segs)} segments"
            f"{f' · {channels} channels' if channels > 1 else ''}</div>"
        )
        parts.append(_div(timeline(call_id, segs, palette), f"timeline-{call_id}"))

    parts.append("<h2>Emotion shares (speech seconds)</h2>")
    shares = ann.sql(
        "SELECT recording_id, emotion, sum(end_s - start_s) AS seconds FROM segments "
        f"{where or 'WHERE true'} AND list_contains($calls, call_id) GROUP BY ALL ORDER BY ALL",
        {**params, "calls": chosen},
    ).df()
    if not shares.empty:
        parts.append(
            _share_bars(shares, "recording_id", "recordings above", palette, "shares-recording")
        )
    per_channel = ann.sql(
        "SELECT coalesce(CAST(channel AS VARCHAR), 'mixed') AS channel, emotion, "
        f"sum(end_s - start_s) AS seconds FROM segments {where} GROUP BY ALL ORDER BY ALL",
        params or None,
    ).df()
    if not per_channel.empty:
        parts.append(
            _share_bars(per_channel, "channel", "per channel, all calls", palette, "shares-channel")
        )

    parts.append("<h2>Confidence</h2>")
    bins = rows(
        "SELECT emotion, least(floor(emotion_confidence * 20), 19) / 20 AS bin, count(*) "
        f"FROM segments {where} GROUP BY ALL ORDER BY ALL"
    )
    fig = go.Figure()
    for emotion in labels:
        mine = [(b, n) for e, b, n in bins if e == emotion]
        fig.add_trace(
            go.Bar(
                x=[b + 0.025 for b, _ in mine],
                y=[n for _, n in mine],
                width=0.05,
                name=emotion,
                marker_color=palette[emotion],
            )
        )
    fig.update_layout(
        barmode="stack",
        xaxis={"title": "probability of the chosen emotion", "range": [0, 1]},
        yaxis_title="segments",
        height=320,
    )
    parts.append(_div(fig, "confidence"))
    per_label = rows(
        "SELECT emotion, count(*), round(avg(emotion_confidence), 3), "
        "round(min(emotion_confidence), 3) "
        f"FROM segments {where} GROUP BY emotion ORDER BY emotion = $unsure, 2 DESC, emotion",
        unsure=UNSURE,
    )
    unsure = next((n for e, n, *_ in per_label if e == UNSURE), 0)
    labelled = totals[2] - unsure
    parts.append(
        f"<p class='unsure'>{unsure} of {totals[2]} segments unsure "
        f"({unsure / max(totals[2], 1):.1%}; coverage {labelled / max(totals[2], 1):.1%}): "
        "their emotion's probability was under the abstention threshold "
        "(models.unsure_below or the bundle's calibration); each keeps its posterior.</p>"
    )
    parts.append(_table(["emotion", "segments", "mean confidence", "lowest"], per_label))
    parts += _experts_section(rows, where)

    by_type = rows(
        f"SELECT stage, error_type, count(*) FROM errors {where} GROUP BY ALL ORDER BY 3 DESC, 1, 2"
    )
    total_errors = sum(n for _, _, n in by_type)
    parts.append(f"<h2>Errors ({total_errors})</h2>")
    if by_type:
        parts.append(_table(["stage", "type", "errors"], by_type))
        listed = rows(
            f"SELECT source_uri, member, stage, error_type, message FROM errors {where} "
            "ORDER BY 1, 2 LIMIT $limit",
            limit=MAX_ERRORS,
        )
        parts.append(_table(["source", "member", "stage", "type", "message"], listed))
        if total_errors > len(listed):
            parts.append(
                f"<p class='note'>the first {len(listed)} of {total_errors}; "
                "`annotator query OUT --name errors_by_type` and SQL over the errors view show all"
                "</p>"
            )
    else:
        parts.append("<p class='note'>none</p>")
    ann.close()
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>annotator report</title>"
        f"<style>{CSS}</style>{WATCH}<script>{get_plotlyjs()}</script></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


def write_report(
    output: str,
    dest: Path,
    s3: S3Config | None = None,
    run_id: str | None = None,
    calls: Sequence[str] = (),
    max_calls: int = MAX_CALLS,
) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(build_report(output, s3, run_id, calls, max_calls), encoding="utf-8")
    return dest
